//! Behaviour and on-disk compatibility with the reference host-local (Go, v1.1.1), checked by
//! running its binary against temporary data dirs, plus the multi-threaded flock test.
//!
//! The reference binary is `/usr/lib/cni/host-local` (Debian `containernetworking-plugins`),
//! or `$BERTH_REFERENCE_HOST_LOCAL`. Without it these tests fail loudly instead of skipping.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::{
    DiskStore, HostLocalConf, IpamConfig, IpamError, LeaseKey, Store, allocate_all, release,
};

fn reference_bin() -> PathBuf {
    let path = std::env::var_os("BERTH_REFERENCE_HOST_LOCAL")
        .map_or_else(|| PathBuf::from("/usr/lib/cni/host-local"), PathBuf::from);
    assert!(
        path.exists(),
        "reference host-local not found at {}: install containernetworking-plugins or set \
         BERTH_REFERENCE_HOST_LOCAL",
        path.display()
    );
    path
}

/// Outcome of one reference call: the result's addresses, or the error message.
type RefOutcome = Result<Vec<String>, String>;

/// Run the reference plugin with `ipam` (JSON object text) for network "n".
fn reference(cmd: &str, cid: &str, ifname: &str, ipam: &str, cni_args: Option<&str>) -> RefOutcome {
    let conf = format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{ipam}}}"#);
    let mut command = Command::new(reference_bin());
    command
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_IFNAME", ifname)
        .env("CNI_NETNS", "/nonexistent")
        .env("CNI_PATH", "/usr/lib/cni")
        .env_remove("CNI_ARGS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(a) = cni_args {
        command.env("CNI_ARGS", a);
    }
    let mut child = command.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    if out.status.success() {
        if stdout.trim().is_empty() {
            return Ok(Vec::new());
        }
        let v: Value = serde_json::from_str(&stdout).unwrap();
        Ok(v["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ip| ip["address"].as_str().unwrap().to_owned())
            .collect())
    } else {
        let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{stdout}"));
        Err(v["msg"].as_str().unwrap().to_owned())
    }
}

/// Parse `ipam` JSON text with `dataDir` replaced by `data_dir`.
fn our_config(ipam: &str, data_dir: &Path) -> Result<IpamConfig, crate::ConfigError> {
    let mut conf: HostLocalConf = serde_json::from_str(ipam).unwrap();
    conf.data_dir = Some(data_dir.to_owned());
    conf.validate()
}

fn ours(cid: &str, ifname: &str, ipam: &str, data_dir: &Path, requested: &[IpAddr]) -> RefOutcome {
    let cfg = our_config(ipam, data_dir).map_err(|e| e.to_string())?;
    let key = LeaseKey::new("n", cid, ifname);
    allocate_all(&cfg, &key, requested)
        .map(|a| a.iter().map(|a| a.ip.to_string()).collect())
        .map_err(|e: IpamError| e.to_string())
}

fn with_dir(ipam: &str, dir: &Path) -> String {
    let mut v: Value = serde_json::from_str(ipam).unwrap();
    v["dataDir"] = Value::String(dir.to_str().unwrap().to_owned());
    v.to_string()
}

/// Every file of a network dir except `lock`, with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .filter(|(n, _)| n != "lock")
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn configs_accepted_and_rejected_like_reference() {
    // (ipam config, same outcome as the reference?) — `false` marks a deliberate divergence.
    let cases: &[(&str, bool)] = &[
        (r#"{"subnet":"198.18.5.0/24"}"#, true),
        (r#"{"subnet":"198.18.5.0/30"}"#, true),
        (r#"{"subnet":"198.18.5.0/31"}"#, true),
        (r#"{"subnet":"198.18.5.0/32"}"#, true),
        (r#"{"subnet":"198.18.5.7/24"}"#, true),
        (r#"{"subnet":"2001:db8::/64"}"#, true),
        (r#"{"subnet":"2001:db8::/126"}"#, true),
        (r#"{"subnet":"2001:db8::/127"}"#, true),
        (r#"{"subnet":"2001:db8::5/127"}"#, true),
        (r#"{"subnet":"2001:db8::/128"}"#, true),
        (
            r#"{"subnet":"198.18.5.0/24","rangeStart":"198.18.5.10"}"#,
            true,
        ),
        (
            r#"{"subnet":"198.18.5.0/24","rangeStart":"198.18.6.1"}"#,
            true,
        ),
        (
            r#"{"subnet":"198.18.5.0/24","rangeEnd":"198.18.6.1"}"#,
            true,
        ),
        (
            r#"{"subnet":"198.18.5.0/24","rangeStart":"2001:db8::1"}"#,
            true,
        ),
        (
            r#"{"subnet":"198.18.5.0/24","rangeStart":"198.18.5.100","rangeEnd":"198.18.5.50"}"#,
            true,
        ),
        (
            r#"{"subnet":"198.18.5.0/24","gateway":"198.18.5.254"}"#,
            true,
        ),
        (
            r#"{"subnet":"198.18.5.0/24","ranges":[[{"subnet":"198.18.6.0/24"}],[{"subnet":"2001:db8::/64"}]]}"#,
            true,
        ),
        (
            r#"{"ranges":[[{"subnet":"198.18.6.0/24"}],[{"subnet":"198.18.6.0/25"}]]}"#,
            true,
        ),
        (
            r#"{"ranges":[[{"subnet":"198.18.6.0/24"},{"subnet":"198.18.6.0/25"}]]}"#,
            true,
        ),
        (
            r#"{"ranges":[[{"subnet":"198.18.6.0/24"},{"subnet":"2001:db8::/64"}]]}"#,
            true,
        ),
        (
            r#"{"ranges":[[{"subnet":"198.18.6.0/24","rangeEnd":"198.18.6.2"},{"subnet":"198.18.7.0/24"}]]}"#,
            true,
        ),
        (r#"{"ranges":[[]]}"#, true),
        (r#"{"type":"host-local"}"#, true),
        (
            r#"{"rangeStart":"198.18.5.3","ranges":[[{"subnet":"198.18.6.0/24"}]]}"#,
            true,
        ),
        (r#"{"subnet":"198.18.5.0/24","unknownKey":[1,2]}"#, true),
        // Divergence: the reference accepts a gateway outside the subnet (and hands out .1).
        (
            r#"{"subnet":"198.18.5.0/24","gateway":"198.18.6.1"}"#,
            false,
        ),
    ];
    for (ipam, same) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let (rdir, odir) = (tmp.path().join("ref"), tmp.path().join("ours"));
        let r = reference("ADD", "c1", "eth0", &with_dir(ipam, &rdir), None);
        let o = ours("c1", "eth0", ipam, &odir, &[]);
        if *same {
            match (&r, &o) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{ipam}"),
                (Err(_), Err(_)) => {}
                _ => panic!("{ipam}: reference {r:?}, ours {o:?}"),
            }
        } else {
            assert!(
                r.is_ok() && o.is_err(),
                "{ipam}: reference {r:?}, ours {o:?}"
            );
        }
    }
}

#[test]
fn allocation_sequence_matches_reference() {
    // A v4 set of two ranges (5 addresses) and a v6 set of 3 addresses; ADDs, a DEL, more
    // ADDs. The round-robin order (hint, skip gateway, wrap across ranges), the failures when
    // the v6 set runs out (with the v4 address given back) and the final state must match.
    let ipam = r#"{"ranges":[
        [{"subnet":"198.18.6.0/24","rangeStart":"198.18.6.252"},
         {"subnet":"198.18.7.0/24","rangeEnd":"198.18.7.3"}],
        [{"subnet":"2001:db8::/120","rangeStart":"2001:db8::fd"}]]}"#;
    let tmp = tempfile::tempdir().unwrap();
    let (rdir, odir) = (tmp.path().join("ref"), tmp.path().join("ours"));
    let rconf = with_dir(ipam, &rdir);
    let ocfg = our_config(ipam, &odir).unwrap();
    let mut seq_ref = Vec::new();
    let mut seq_ours = Vec::new();
    let steps: Vec<(&str, String)> = (0..4)
        .map(|i| ("ADD", format!("c{i}")))
        .chain([("DEL", "c1".to_owned())])
        .chain((4..8).map(|i| ("ADD", format!("c{i}"))))
        .collect();
    for (cmd, cid) in &steps {
        seq_ref.push(reference(cmd, cid, "eth0", &rconf, None));
        let key = LeaseKey::new("n", cid, "eth0");
        seq_ours.push(match *cmd {
            "ADD" => allocate_all(&ocfg, &key, &[])
                .map(|a| a.iter().map(|a| a.ip.to_string()).collect())
                .map_err(|e| e.to_string()),
            _ => release(&ocfg, &key)
                .map(|_| Vec::new())
                .map_err(|e| e.to_string()),
        });
    }
    for (i, (r, o)) in seq_ref.iter().zip(&seq_ours).enumerate() {
        match (r, o) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "step {i} {:?}", steps[i]),
            (Err(_), Err(_)) => {}
            _ => panic!("step {i} {:?}: reference {r:?}, ours {o:?}", steps[i]),
        }
    }
    assert!(seq_ref.last().unwrap().is_err() && seq_ours.last().unwrap().is_err());
    // Same state on disk, byte for byte.
    assert_eq!(files(&rdir.join("n")), files(&odir.join("n")));
}

#[test]
fn on_disk_bytes_equal_reference() {
    let ipam = r#"{"subnet":"198.18.5.0/24","ranges":[[{"subnet":"2001:db8:0:1::/64"}]]}"#;
    let tmp = tempfile::tempdir().unwrap();
    let (rdir, odir) = (tmp.path().join("ref"), tmp.path().join("ours"));
    for (cid, ifname) in [("c1", "eth0"), ("c1", "net1"), ("0123abcd", "eth0")] {
        let r = reference("ADD", cid, ifname, &with_dir(ipam, &rdir), None).unwrap();
        let o = ours(cid, ifname, ipam, &odir, &[]).unwrap();
        assert_eq!(r, o);
    }
    let (rf, of) = (files(&rdir.join("n")), files(&odir.join("n")));
    assert_eq!(rf, of);
    assert_eq!(rf["198.18.5.2"], b"c1\r\neth0");
    assert_eq!(rf["2001:db8:0:1::3"], b"c1\r\nnet1");
    assert_eq!(rf["last_reserved_ip.1"], b"2001:db8:0:1::4");
    // Directory and file modes (umask applies to both; compare what each produced).
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: PathBuf| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(rdir.join("n")), mode(odir.join("n")));
    assert_eq!(
        mode(rdir.join("n/198.18.5.2")),
        mode(odir.join("n/198.18.5.2"))
    );
    assert_eq!(
        mode(rdir.join("n/last_reserved_ip.0")),
        mode(odir.join("n/last_reserved_ip.0"))
    );
}

#[test]
fn reference_state_is_read_by_disk_store() {
    let tmp = tempfile::tempdir().unwrap();
    let ipam = with_dir(r#"{"subnet":"198.18.5.0/24"}"#, tmp.path());
    reference("ADD", "c1", "eth0", &ipam, None).unwrap();
    reference("ADD", "c2", "eth1", &ipam, Some("IP=198.18.5.50")).unwrap();
    let store = DiskStore::open(tmp.path(), "n").unwrap();
    let _g = store.lock().unwrap();
    let mut leases: Vec<String> = store
        .leases()
        .unwrap()
        .into_iter()
        .map(|l| format!("{} {} {:?}", l.ip, l.container_id, l.ifname))
        .collect();
    leases.sort();
    assert_eq!(
        leases,
        [
            "198.18.5.2 c1 Some(\"eth0\")",
            "198.18.5.50 c2 Some(\"eth1\")"
        ]
    );
    assert_eq!(store.last_reserved(0).unwrap(), Some(ip("198.18.5.50")));
    drop(_g);
    // Our next ADD continues the reference's round-robin after its hint.
    let cfg = our_config(r#"{"subnet":"198.18.5.0/24"}"#, tmp.path()).unwrap();
    let got = allocate_all(&cfg, &LeaseKey::new("n", "c3", "eth0"), &[]).unwrap();
    assert_eq!(got[0].ip.to_string(), "198.18.5.51/24");
    // That ADD indexed the reference's files (our index did not exist): pins, lists.
    let idx = tmp.path().join(".berth-keys/n");
    assert_eq!(
        fs::read_link(idx.join("@c2:eth1")).unwrap(),
        Path::new("198.18.5.50")
    );
    assert!(idx.join("198.18.5.2").exists());
    // Our DEL releases the reference's reservation.
    assert_eq!(
        release(&cfg, &LeaseKey::new("n", "c2", "eth1")).unwrap(),
        [ip("198.18.5.50")]
    );
    assert!(!idx.join("@c2:eth1").exists() && !idx.join("198.18.5.50").exists());
    // And the rest, down to an empty network without index.
    release(&cfg, &LeaseKey::new("n", "c1", "eth0")).unwrap();
    release(&cfg, &LeaseKey::new("n", "c3", "eth0")).unwrap();
    assert_eq!(names(&tmp.path().join("n")), ["lock".to_owned()].into());
    assert!(!tmp.path().join(".berth-keys").exists());
}

#[test]
fn our_state_is_read_by_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = r#"{"subnet":"198.18.5.0/24"}"#;
    let ipam = with_dir(raw, tmp.path());
    let cfg = our_config(raw, tmp.path()).unwrap();
    allocate_all(&cfg, &LeaseKey::new("n", "c1", "eth0"), &[]).unwrap();
    allocate_all(&cfg, &LeaseKey::new("n", "c2", "eth0"), &[]).unwrap();
    let dir = tmp.path().join("n");
    // Reference CHECK finds our reservation; its ADD for the same key sees the duplicate.
    reference("CHECK", "c1", "eth0", &ipam, None).unwrap();
    let err = reference("ADD", "c1", "eth0", &ipam, None).unwrap_err();
    assert!(err.contains("duplicate allocation is not allowed"), "{err}");
    // Reference ADD continues after our hint (.3) and skips our reservations.
    assert_eq!(
        reference("ADD", "c9", "eth0", &ipam, None).unwrap(),
        ["198.18.5.4/24"]
    );
    // Reference DEL removes our file.
    reference("DEL", "c1", "eth0", &ipam, None).unwrap();
    assert!(!dir.join("198.18.5.2").exists());
    assert!(dir.join("198.18.5.3").exists());
    reference("DEL", "c2", "eth0", &ipam, None).unwrap();
    reference("DEL", "c9", "eth0", &ipam, None).unwrap();
    let left: BTreeSet<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        left,
        ["last_reserved_ip.0", "lock"].map(String::from).into()
    );
    // The reference never looks at our index beside the network directory, so it is left
    // stale (its pins still hold c2's inode); our next transaction finds the network empty
    // and removes it, the hint with it.
    assert!(tmp.path().join(".berth-keys/n").exists());
    release(&cfg, &LeaseKey::new("n", "nobody", "eth0")).unwrap();
    assert!(!tmp.path().join(".berth-keys").exists());
    assert_eq!(names(&dir), ["lock".to_owned()].into());
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// Both implementations take turns on one store: whatever the reference reserves or
/// releases behind our index, our lookups still see exactly the files on disk.
#[test]
fn alternating_with_the_reference_keeps_lookups_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = r#"{"subnet":"198.18.5.0/24"}"#;
    let ipam = with_dir(raw, tmp.path());
    let cfg = our_config(raw, tmp.path()).unwrap();
    let dir = tmp.path().join("n");
    let held = |c: &str| crate::ops::held(&cfg, &LeaseKey::new("n", c, "eth0")).unwrap();
    for c in ["c1", "c2", "c3"] {
        ours(c, "eth0", raw, tmp.path(), &[]).unwrap();
    }
    assert_eq!(held("c2"), [ip("198.18.5.3")]);
    // The reference reserves after our hint, and takes over c2's address: its DEL of c2,
    // then an ADD requesting .3 (a new file with the same name).
    assert_eq!(
        reference("ADD", "r1", "eth0", &ipam, None).unwrap(),
        ["198.18.5.5/24"]
    );
    reference("DEL", "c2", "eth0", &ipam, None).unwrap();
    reference("ADD", "r2", "eth0", &ipam, Some("IP=198.18.5.3")).unwrap();
    // Our lookups see the reference's work.
    assert!(held("c2").is_empty());
    assert_eq!(held("r2"), [ip("198.18.5.3")]);
    // A duplicate ADD for a reference-made attachment is refused, as the reference does.
    let err = allocate_all(&cfg, &LeaseKey::new("n", "r1", "eth0"), &[]).unwrap_err();
    assert!(
        matches!(
            err,
            IpamError::Allocate {
                source: crate::AllocError::Duplicate { .. },
                ..
            }
        ),
        "{err:?}"
    );
    // Our DEL releases what the reference reserved...
    assert_eq!(
        release(&cfg, &LeaseKey::new("n", "r1", "eth0")).unwrap(),
        [ip("198.18.5.5")]
    );
    assert_eq!(
        release(&cfg, &LeaseKey::new("n", "r2", "eth0")).unwrap(),
        [ip("198.18.5.3")]
    );
    // ...and the reference still reads ours.
    reference("CHECK", "c3", "eth0", &ipam, None).unwrap();
    reference("DEL", "c3", "eth0", &ipam, None).unwrap();
    assert!(held("c3").is_empty());
    assert_eq!(held("c1"), [ip("198.18.5.2")]);
    release(&cfg, &LeaseKey::new("n", "c1", "eth0")).unwrap();
    assert_eq!(names(&dir), ["lock".to_owned()].into());
    assert!(!tmp.path().join(".berth-keys").exists());
}

#[test]
fn legacy_files_released_by_both() {
    // Old reference versions wrote the bare container id. Both implementations release it.
    let tmp = tempfile::tempdir().unwrap();
    let raw = r#"{"subnet":"198.18.5.0/24"}"#;
    let ipam = with_dir(raw, tmp.path());
    let cfg = our_config(raw, tmp.path()).unwrap();
    let dir = tmp.path().join("n");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("198.18.5.20"), "c1").unwrap();
    fs::write(dir.join("198.18.5.21"), "c2\n").unwrap();
    reference("DEL", "c1", "eth0", &ipam, None).unwrap();
    assert!(!dir.join("198.18.5.20").exists());
    assert_eq!(
        release(&cfg, &LeaseKey::new("n", "c2", "eth7")).unwrap(),
        [ip("198.18.5.21")]
    );
}

/// 8 threads × 100 ADDs, each thread with its own `DiskStore` (own open file description of
/// `lock`), so only flock keeps them apart. No address may be handed out twice.
#[test]
fn concurrent_threads_never_share_an_address() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 100;
    let tmp = tempfile::tempdir().unwrap();
    // /22: 1021 allocatable addresses, enough for 800.
    let cfg = our_config(r#"{"subnet":"198.18.8.0/22"}"#, tmp.path()).unwrap();
    let all: Vec<IpAddr> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let cfg = &cfg;
                s.spawn(move || {
                    let store = DiskStore::open(&cfg.data_dir, "n").unwrap();
                    let mut got = Vec::with_capacity(PER_THREAD);
                    for i in 0..PER_THREAD {
                        let key = LeaseKey::new("n", format!("t{t}-c{i}"), "eth0");
                        let guard = store.lock().unwrap();
                        let a = crate::ops::allocate_all_with(
                            &store,
                            &guard,
                            &cfg.range_sets,
                            &key,
                            &[],
                        )
                        .unwrap();
                        got.push(a[0].ip.ip());
                    }
                    got
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(all.len(), THREADS * PER_THREAD);
    let unique: HashSet<IpAddr> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "an address was handed out twice");
    // Every reservation file names its own holder.
    let store = DiskStore::open(&cfg.data_dir, "n").unwrap();
    assert_eq!(store.leases().unwrap().len(), THREADS * PER_THREAD);

    // Release everything, again from concurrent handles.
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let cfg = &cfg;
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    let key = LeaseKey::new("n", format!("t{t}-c{i}"), "eth0");
                    assert_eq!(release(cfg, &key).unwrap().len(), 1);
                }
            });
        }
    });
    // Only the lock: the hint went with the last reservation (the reference keeps it), and
    // the index with it.
    assert_eq!(names(&tmp.path().join("n")), ["lock".to_owned()].into());
    assert!(!tmp.path().join(".berth-keys").exists());
}

/// Our threads and reference processes allocate from one directory at the same time: the
/// reference's go-filemutex is flock too, so they exclude each other.
#[test]
fn concurrent_with_reference_processes() {
    const REF_PROCS: usize = 12;
    const OUR_THREADS: usize = 2;
    const PER_THREAD: usize = 12;
    let tmp = tempfile::tempdir().unwrap();
    let raw = r#"{"subnet":"198.18.12.0/24"}"#;
    let ipam = with_dir(raw, tmp.path());
    let cfg = our_config(raw, tmp.path()).unwrap();
    let all: Vec<String> = std::thread::scope(|s| {
        let refs: Vec<_> = (0..REF_PROCS)
            .map(|i| {
                let ipam = &ipam;
                s.spawn(move || reference("ADD", &format!("r{i}"), "eth0", ipam, None).unwrap())
            })
            .collect();
        let ours: Vec<_> = (0..OUR_THREADS)
            .map(|t| {
                let cfg = &cfg;
                s.spawn(move || {
                    (0..PER_THREAD)
                        .map(|i| {
                            let key = LeaseKey::new("n", format!("o{t}-{i}"), "eth0");
                            allocate_all(cfg, &key, &[]).unwrap()[0].ip.to_string()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        refs.into_iter()
            .chain(ours)
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(all.len(), REF_PROCS + OUR_THREADS * PER_THREAD);
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "{all:?}");
}
