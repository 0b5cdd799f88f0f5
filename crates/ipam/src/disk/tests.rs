use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

#[test]
fn open_rejects_bad_network_names() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["", ".", "..", "a/b", "/abs"] {
        let err = DiskStore::open(tmp.path(), name).unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidNetworkName { .. }),
            "{name}: {err}"
        );
    }
    assert!(DiskStore::open_existing(tmp.path(), "n").unwrap().is_none());
    assert!(!tmp.path().join("n").exists());
}

#[test]
fn layout_and_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("a/b");
    let store = DiskStore::open(&data, "net").unwrap();
    let dir = data.join("net");
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o7777 & !0o022,
        0o755 & !0o022
    );
    let key = LeaseKey::new("net", "c1", "eth0");
    let _g = store.lock().unwrap();
    assert!(store.reserve(&key, ip("198.18.5.2")).unwrap());
    assert!(!store.reserve(&key, ip("198.18.5.2")).unwrap());
    assert!(store.reserve(&key, ip("2001:db8::2")).unwrap());
    store.set_last_reserved(0, ip("198.18.5.2")).unwrap();
    assert_eq!(
        fs::read(dir.join("198.18.5.2")).unwrap(),
        b"c1\r\neth0".to_vec()
    );
    assert_eq!(
        fs::read(dir.join("last_reserved_ip.0")).unwrap(),
        b"198.18.5.2".to_vec()
    );
    assert_eq!(
        names(&dir),
        ["198.18.5.2", "2001:db8::2", "last_reserved_ip.0", "lock"]
            .map(String::from)
            .into()
    );
    assert_eq!(store.last_reserved(0).unwrap(), Some(ip("198.18.5.2")));
    assert_eq!(store.last_reserved(1).unwrap(), None);
    assert!(store.reserved(ip("2001:db8::2")).unwrap());
    let mut held = store.get_by_key(&key).unwrap();
    held.sort();
    assert_eq!(held, [ip("198.18.5.2"), ip("2001:db8::2")]);
    assert_eq!(store.release_by_key(&key).unwrap().len(), 2);
    assert_eq!(store.release_by_key(&key).unwrap().len(), 0);
    assert!(!store.release_ip(ip("198.18.5.2")).unwrap());
}

#[test]
fn old_format_is_fallback_for_release() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DiskStore::open(tmp.path(), "n").unwrap();
    let dir = store.dir().to_owned();
    fs::write(dir.join("198.18.5.3"), "c1").unwrap();
    fs::write(dir.join("198.18.5.4"), "c1\r\neth1").unwrap();
    let eth0 = LeaseKey::new("n", "c1", "eth0");
    let eth1 = LeaseKey::new("n", "c1", "eth1");
    let mut held = store.get_by_key(&eth1).unwrap();
    held.sort();
    assert_eq!(held, [ip("198.18.5.3"), ip("198.18.5.4")]);
    // eth1 has a current-format match, so the legacy file stays...
    assert_eq!(store.release_by_key(&eth1).unwrap(), [ip("198.18.5.4")]);
    // ...and goes with the next key of that container that has no current-format file.
    assert_eq!(store.release_by_key(&eth0).unwrap(), [ip("198.18.5.3")]);
    assert_eq!(names(&dir), ["lock".to_owned()].into());
}

#[test]
fn garbage_hint_is_no_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DiskStore::open(tmp.path(), "n").unwrap();
    fs::write(store.dir().join("last_reserved_ip.0"), "garbage").unwrap();
    assert_eq!(store.last_reserved(0).unwrap(), None);
}

#[test]
fn lock_twice_on_one_handle_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DiskStore::open(tmp.path(), "n").unwrap();
    let g = store.lock().unwrap();
    assert!(matches!(
        store.lock(),
        Err(StoreError::AlreadyLocked { .. })
    ));
    drop(g);
    let _g = store.lock().unwrap();
}

#[test]
fn flock_excludes_other_handles_in_this_process() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    let tmp = tempfile::tempdir().unwrap();
    let a = DiskStore::open(tmp.path(), "n").unwrap();
    let guard = a.lock().unwrap();
    let acquired = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(2));
    let t = {
        let (path, acquired, barrier) = (tmp.path().to_owned(), acquired.clone(), barrier.clone());
        std::thread::spawn(move || {
            let b = DiskStore::open(&path, "n").unwrap();
            barrier.wait();
            let _g = b.lock().unwrap();
            acquired.store(true, Ordering::SeqCst);
        })
    };
    barrier.wait();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !acquired.load(Ordering::SeqCst),
        "second handle got the lock"
    );
    drop(guard);
    t.join().unwrap();
    assert!(acquired.load(Ordering::SeqCst));
}

#[test]
fn directory_named_like_an_ip_is_taken_but_not_a_lease() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DiskStore::open(tmp.path(), "n").unwrap();
    let key = LeaseKey::new("n", "c1", "eth0");
    // O_EXCL fails with EEXIST on any entry of that name: "taken", not an error.
    fs::create_dir(store.dir().join("198.18.5.9")).unwrap();
    assert!(!store.reserve(&key, ip("198.18.5.9")).unwrap());
    assert!(store.leases().unwrap().is_empty());
    assert_eq!(store.reserved_ips().unwrap(), [ip("198.18.5.9")]);
}

// ---- the key index ----------------------------------------------------------------

/// One locked transaction, as a plugin process does: lock, work, seal at unlock.
fn tx<T>(store: &DiskStore, f: impl FnOnce(&DiskStore) -> T) -> T {
    let _guard = store.lock().unwrap();
    f(store)
}

fn key(c: &str) -> LeaseKey {
    LeaseKey::new("n", c, "eth0")
}

/// `n` reservations c0…c{n-1} → 198.18.0.2…, each in its own transaction.
fn populate(store: &DiskStore, n: u8) {
    for i in 0..n {
        let ip = IpAddr::from([198, 18, 0, 2 + i]);
        assert!(tx(store, |s| s
            .reserve(&key(&format!("c{i}")), ip)
            .unwrap()));
    }
}

fn counters(store: &DiskStore) -> (usize, usize) {
    (store.reads.get(), store.listings.get())
}

fn reset(store: &DiskStore) {
    store.reads.set(0);
    store.listings.set(0);
}

#[test]
fn index_hit_reads_only_the_holders_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DiskStore::open(tmp.path(), "n").unwrap();
    populate(&store, 200);
    let idx = store.index_dir().to_owned();
    // The layout: a pin (same inode as the reservation), a holder list, the record.
    let pin = fs::metadata(idx.join("198.18.0.19")).unwrap();
    let file = fs::metadata(store.dir().join("198.18.0.19")).unwrap();
    assert_eq!((pin.ino(), pin.nlink()), (file.ino(), 2));
    assert_eq!(
        fs::read_link(idx.join("@c17:eth0")).unwrap(),
        Path::new("198.18.0.19")
    );
    assert!(
        fs::read_link(idx.join(".summary"))
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("v1 200 200 ")
    );

    reset(&store);
    let (got, mode) = tx(&store, |s| {
        (s.get_by_key(&key("c17")).unwrap(), s.index_mode())
    });
    assert_eq!(got, [ip("198.18.0.19")]);
    assert_eq!(mode, Some(IndexMode::Trusted));
    // The seal matched: no listing; one file read, the holder's.
    assert_eq!(counters(&store), (1, 0));

    reset(&store);
    let released = tx(&store, |s| s.release_by_key(&key("c17")).unwrap());
    assert_eq!(released, [ip("198.18.0.19")]);
    assert_eq!(counters(&store), (1, 0));
    assert!(!idx.join("198.18.0.19").exists() && !idx.join("@c17:eth0").exists());

    // A key that holds nothing costs no read at all.
    reset(&store);
    assert!(tx(&store, |s| s.get_by_key(&key("nobody")).unwrap()).is_empty());
    assert_eq!(counters(&store), (0, 0));
}

#[test]
fn a_touched_directory_costs_a_listing_not_a_rebuild() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DiskStore::open(tmp.path(), "n").unwrap();
    populate(&store, 50);
    // Something changes the mtime but no entry (a hint rewritten in place, `touch`).
    fs::write(store.dir().join("last_reserved_ip.0"), "198.18.0.51").unwrap();
    File::create(store.dir().join("junk")).unwrap();
    fs::remove_file(store.dir().join("junk")).unwrap();
    reset(&store);
    let got = tx(&store, |s| s.get_by_key(&key("c3")).unwrap());
    assert_eq!(got, [ip("198.18.0.5")]);
    // The listing matched the checksum: one listing, one read, no rebuild.
    assert_eq!(counters(&store), (1, 1));
    // ...and the transaction sealed the directory again.
    reset(&store);
    tx(&store, |s| s.get_by_key(&key("c3")).unwrap());
    assert_eq!(counters(&store), (1, 0));
}

#[test]
fn reservations_made_behind_the_index_are_found() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DiskStore::open(tmp.path(), "n").unwrap();
    populate(&store, 20);
    // The reference (or an older Berth) reserves: a plain file, no index.
    fs::write(store.dir().join("198.18.0.99"), "ref1\r\neth0").unwrap();
    fs::write(store.dir().join("198.18.0.98"), "ref2").unwrap();
    reset(&store);
    let got = tx(&store, |s| {
        let got = s.get_by_key(&key("ref1")).unwrap();
        (got, s.index_mode())
    });
    assert_eq!(got, (vec![ip("198.18.0.99")], Some(IndexMode::Trusted)));
    // Seal mismatch, checksum mismatch: one listing, a full rebuild (22 reads), then
    // the lookup (1 read).
    assert_eq!(counters(&store), (23, 1));
    let idx = store.index_dir().to_owned();
    assert_eq!(
        fs::read_link(idx.join("@ref2")).unwrap(),
        Path::new("198.18.0.98")
    );
    // Then indexed like any other: the old-format one goes with any ifname of ref2.
    reset(&store);
    let released = tx(&store, |s| {
        s.release_by_key(&LeaseKey::new("n", "ref2", "eth7"))
            .unwrap()
    });
    assert_eq!(released, [ip("198.18.0.98")]);
    assert_eq!(counters(&store), (1, 0));
}

#[test]
fn stale_entries_after_a_crash_are_ignored_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DiskStore::open(tmp.path(), "n").unwrap();
    populate(&store, 3);
    let idx = store.index_dir().to_owned();
    // An ADD of c9 crashed after its pin and its list, before the link: the network
    // directory did not change, so the seal still holds.
    fs::write(idx.join("198.18.0.50"), "c9\r\neth0").unwrap();
    std::os::unix::fs::symlink("198.18.0.50", idx.join("@c9:eth0")).unwrap();
    // c1's list names an address whose file now holds someone else (c2's).
    std::os::unix::fs::symlink("198.18.0.3 198.18.0.4", idx.join("@c1:eth1")).unwrap();
    let (c9, c1, mode) = tx(&store, |s| {
        let c9 = s.get_by_key(&key("c9")).unwrap();
        let c1 = s.get_by_key(&LeaseKey::new("n", "c1", "eth1")).unwrap();
        (c9, c1, s.index_mode())
    });
    assert!(c9.is_empty() && c1.is_empty());
    assert_eq!(mode, Some(IndexMode::Trusted));
    // Dropped: the stale pin, the lists naming nothing of theirs.
    assert!(!idx.join("198.18.0.50").exists());
    assert!(!idx.join("@c9:eth0").exists() && !idx.join("@c1:eth1").exists());
    // The real holders are untouched.
    assert_eq!(
        tx(&store, |s| s.get_by_key(&key("c2")).unwrap()),
        [ip("198.18.0.4")]
    );
    // The stale pin's address can be reserved again (a leftover pin would be replaced).
    fs::write(idx.join("198.18.0.51"), "c8\r\neth0").unwrap();
    assert!(tx(&store, |s| s
        .reserve(&key("c8"), ip("198.18.0.51"))
        .unwrap()));
    assert_eq!(
        fs::read(store.dir().join("198.18.0.51")).unwrap(),
        b"c8\r\neth0"
    );
}

#[test]
fn a_file_replaced_behind_the_index_is_not_its_old_holders() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DiskStore::open(tmp.path(), "n").unwrap();
    populate(&store, 3);
    let idx = store.index_dir().to_owned();
    // The reference DELs c1 (.3) and hands .3 to r1 at once (a requested address). The
    // pin keeps c1's old inode alive, so the new file has another inode.
    let old = fs::metadata(store.dir().join("198.18.0.3")).unwrap().ino();
    fs::remove_file(store.dir().join("198.18.0.3")).unwrap();
    fs::write(store.dir().join("198.18.0.3"), "r1\r\neth0").unwrap();
    assert_ne!(
        fs::metadata(store.dir().join("198.18.0.3")).unwrap().ino(),
        old
    );
    let (c1, r1) = tx(&store, |s| {
        (
            s.get_by_key(&key("c1")).unwrap(),
            s.get_by_key(&key("r1")).unwrap(),
        )
    });
    assert!(c1.is_empty());
    assert_eq!(r1, [ip("198.18.0.3")]);
    assert!(!idx.join("@c1:eth0").exists());
    assert_eq!(
        fs::metadata(idx.join("198.18.0.3")).unwrap().ino(),
        fs::metadata(store.dir().join("198.18.0.3")).unwrap().ino()
    );
}

#[test]
fn the_last_release_removes_the_index() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DiskStore::open(tmp.path(), "n").unwrap();
    populate(&store, 3);
    // (A symlink to a record, not to a file: `exists()` would follow it.)
    assert!(fs::symlink_metadata(tmp.path().join(".berth-keys/n/.summary")).is_ok());
    for i in 0..3 {
        tx(&store, |s| {
            s.release_by_key(&key(&format!("c{i}"))).unwrap()
        });
    }
    assert_eq!(names(store.dir()), ["lock".to_owned()].into());
    assert!(!tmp.path().join(".berth-keys").exists());
    // Leftovers of a crash or a foreign DEL go at the next transaction that finds the
    // network empty.
    fs::create_dir_all(tmp.path().join(".berth-keys/n")).unwrap();
    fs::write(tmp.path().join(".berth-keys/n/198.18.0.2"), "c0\r\neth0").unwrap();
    assert!(tx(&store, |s| s.get_by_key(&key("c0")).unwrap()).is_empty());
    assert!(!tmp.path().join(".berth-keys").exists());
}

#[test]
fn without_a_usable_index_the_store_scans() {
    let tmp = tempfile::tempdir().unwrap();
    // The index root cannot be created: a file is in the way.
    fs::write(tmp.path().join(".berth-keys"), "").unwrap();
    let store = DiskStore::open(tmp.path(), "n").unwrap();
    let (added, mode, problem) = tx(&store, |s| {
        let a = s.reserve(&key("c1"), ip("198.18.0.2")).unwrap();
        (a, s.index_mode(), s.index_problem())
    });
    assert!(added);
    assert_eq!(mode, Some(IndexMode::Unusable));
    let problem = problem.unwrap();
    assert!(problem.contains(".berth-keys/n"), "{problem}");
    assert_eq!(
        fs::read(store.dir().join("198.18.0.2")).unwrap(),
        b"c1\r\neth0"
    );
    // Lookups and releases still work, by scanning.
    populate_more(&store);
    assert_eq!(
        tx(&store, |s| s.get_by_key(&key("c1")).unwrap()),
        [ip("198.18.0.2")]
    );
    assert_eq!(
        tx(&store, |s| s.release_by_key(&key("c1")).unwrap()),
        [ip("198.18.0.2")]
    );
    assert!(tx(&store, |s| s.get_by_key(&key("c1")).unwrap()).is_empty());
}

fn populate_more(store: &DiskStore) {
    assert!(tx(store, |s| s
        .reserve(&key("c2"), ip("198.18.0.3"))
        .unwrap()));
}

#[test]
fn networks_share_the_index_root_safely() {
    // Each network has its own lock; only `.berth-keys` itself is shared, created by one
    // network's first reservation and removed by another's last.
    let tmp = tempfile::tempdir().unwrap();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let data = tmp.path();
            s.spawn(move || {
                let net = format!("n{t}");
                let store = DiskStore::open(data, &net).unwrap();
                for round in 0..50u8 {
                    let k = LeaseKey::new(&net, format!("c{round}"), "eth0");
                    let ip = IpAddr::from([198, 18, t, 2]);
                    {
                        let _g = store.lock().unwrap();
                        assert!(store.reserve(&k, ip).unwrap(), "{net} round {round}");
                        assert_eq!(store.index_mode(), Some(IndexMode::Trusted));
                    }
                    let _g = store.lock().unwrap();
                    assert_eq!(store.release_by_key(&k).unwrap(), [ip]);
                }
            });
        }
    });
    assert!(!tmp.path().join(".berth-keys").exists());
}

#[test]
fn without_hard_links_to_the_index_each_file_is_read_once() {
    // The index root on another file system (a tmpfs): link(2) fails with EXDEV.
    let tmp = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir_in("/dev/shm").unwrap();
    assert_ne!(
        fs::metadata(tmp.path()).unwrap().dev(),
        fs::metadata(other.path()).unwrap().dev(),
        "the test needs /dev/shm on another file system than the temp dir"
    );
    std::os::unix::fs::symlink(other.path(), tmp.path().join(".berth-keys")).unwrap();
    let store = DiskStore::open(tmp.path(), "n").unwrap();
    let (added, mode) = tx(&store, |s| {
        (
            s.reserve(&key("c1"), ip("198.18.0.2")).unwrap(),
            s.index_mode(),
        )
    });
    assert!(added);
    assert_eq!(mode, Some(IndexMode::Unusable));
    assert_eq!(
        fs::read(store.dir().join("198.18.0.2")).unwrap(),
        b"c1\r\neth0"
    );
    for i in 3..10u8 {
        let ip = IpAddr::from([198, 18, 0, i]);
        assert!(tx(&store, |s| s
            .reserve(&key(&format!("c{i}")), ip)
            .unwrap()));
    }
    reset(&store);
    let (got, problem) = tx(&store, |s| {
        (s.get_by_key(&key("c5")).unwrap(), s.index_problem())
    });
    assert_eq!(got, [ip("198.18.0.5")]);
    assert!(problem.unwrap().contains("hard links"));
    // The rebuild gave up before reading; the scan read each of the 8 files once.
    assert_eq!(counters(&store), (8, 1));
    assert_eq!(
        tx(&store, |s| s.release_by_key(&key("c5")).unwrap()),
        [ip("198.18.0.5")]
    );
}

#[test]
fn an_oddly_spelt_foreign_reservation_is_found_by_a_scan() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DiskStore::open(tmp.path(), "n").unwrap();
    populate(&store, 2);
    fs::write(store.dir().join("2001:db8:0::5"), "odd\r\neth0").unwrap();
    let (got, mode, problem) = tx(&store, |s| {
        let got = s.get_by_key(&key("odd")).unwrap();
        (got, s.index_mode(), s.index_problem())
    });
    assert_eq!(got, [ip("2001:db8::5")]);
    assert_eq!(mode, Some(IndexMode::Unusable));
    assert!(problem.unwrap().contains("canonical"));
    // The others are found too.
    assert_eq!(
        tx(&store, |s| s.get_by_key(&key("c1")).unwrap()),
        [ip("198.18.0.3")]
    );
}

/// Issue 11's class of finding 4: a holder killed between writing a temporary and renaming it
/// leaves the temporary; the next lock holder removes it, so an emptied network leaves nothing
/// but `lock`.
#[test]
fn the_next_lock_holder_removes_a_killed_writers_temporaries() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DiskStore::open(tmp.path(), "net").unwrap();
    let dir = tmp.path().join("net");
    fs::write(dir.join(LAST_RESERVED_TMP), b"198.18.").unwrap();
    fs::create_dir_all(store.index.dir()).unwrap();
    std::os::unix::fs::symlink("dangling", store.index.temporary()).unwrap();
    let key = LeaseKey::new("net", "c1", "eth0");
    {
        let _g = store.lock().unwrap();
        assert!(store.reserve(&key, ip("198.18.5.2")).unwrap());
    }
    {
        let _g = store.lock().unwrap();
        store.release_by_key(&key).unwrap();
    }
    assert!(!store.index.temporary().exists());
    assert!(!store.index.temporary().is_symlink());
    assert_eq!(names(&dir), ["lock"].map(String::from).into());
}
