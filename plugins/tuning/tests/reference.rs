//! Side by side with the reference tuning plugin (Debian's containernetworking-plugins 1.1.1
//! in /usr/lib/cni), in every version it supports: the same configuration gives the same
//! result JSON, the same kernel state after ADD and after DEL, the same saved values; bad
//! input gets the same error code, and ours changes nothing. Each implementation runs in its
//! own pair of namespaces, built identically.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use common::*;
use netns_fixtures::require_root;
use serde_json::{Value, json};

/// The keys of the reference's saved-values file: ours must hold the same values under them.
const REFERENCE_STATE_KEYS: [&str; 4] = ["mac", "promisc", "mtu", "allmulti"];

struct Case {
    what: &'static str,
    keys: Value,
    cni_args: &'static str,
}

fn cases() -> Vec<Case> {
    vec![
        // What podman 4.3 writes into its conflists: no keys at all.
        Case {
            what: "no keys",
            keys: json!({}),
            cni_args: "",
        },
        Case {
            what: "every key",
            keys: full_keys("0a:58:c6:12:00:09"),
            cni_args: "",
        },
        // Precedence: args.cni over runtimeConfig over CNI_ARGS over the keys. args.cni.sysctl
        // only merges into a top-level sysctl in the reference (it panics without one).
        Case {
            what: "capability, CNI_ARGS and args.cni",
            keys: json!({
                "mac": "0a:58:c6:12:00:01",
                "mtu": 1400,
                "sysctl": {"net.core.somaxconn": "1024"},
                "runtimeConfig": {"mac": "0a:58:c6:12:00:03"},
                "args": {"cni": {
                    "mtu": 1300,
                    "promisc": true,
                    "allmulti": false,
                    "sysctl": {"net.core.somaxconn": "2048", "net.ipv4.ip_forward": "1"},
                }},
            }),
            cni_args: "IgnoreUnknown=1;MAC=0a:58:c6:12:00:02",
        },
        Case {
            what: "CNI_ARGS MAC",
            keys: json!({"sysctl": {"net/ipv4/conf/IFNAME/arp_filter": "1"}}),
            cni_args: "IgnoreUnknown=true;K8S_POD_NAME=x;MAC=0a:58:c6:12:00:04",
        },
    ]
}

/// What one implementation did with one configuration.
#[derive(Debug)]
struct Outcome {
    initial: Kernel,
    result: Value,
    after_add: Kernel,
    saved: Value,
    /// CHECK's outcome (0.4.0 on). The reference's CHECK fails on an `IFNAME` key (it does
    /// not substitute it) and on a multi-value key (it compares the text the kernel prints
    /// with tabs), so only ours must pass.
    check: Option<Result<(), String>>,
    after_del: Kernel,
    files_after_del: Vec<String>,
}

fn run(bin: &str, version: &str, case: &Case) -> Outcome {
    let world = World::new();
    let conf = world.conf(version, case.keys.clone());
    let initial = world.kernel();
    let add = world.call_with(bin, "ADD", &conf, case.cni_args, IFNAME);
    let result = add.expect_success();
    let after_add = world.kernel();
    let saved = match world.saved_files().is_empty() {
        true => Value::Null,
        false => world.saved(),
    };
    let conf = with_prev(&conf, &result);
    let check = (version >= "0.4.0").then(|| {
        let out = world.call_with(bin, "CHECK", &conf, case.cni_args, IFNAME);
        if out.success() {
            Ok(())
        } else {
            Err(out.stdout)
        }
    });
    let del = world.call_with(bin, "DEL", &conf, case.cni_args, IFNAME);
    assert_eq!(
        del.expect_success(),
        Value::Null,
        "{bin}: DEL prints nothing"
    );
    Outcome {
        initial,
        result,
        after_add,
        saved,
        check,
        after_del: world.kernel(),
        files_after_del: world.saved_files(),
    }
}

#[test]
fn same_result_kernel_state_and_restore_in_every_version() {
    require_root();
    for version in REF_VERSIONS {
        for case in cases() {
            let at = format!("{version}, {}", case.what);
            let theirs = run(reference(), version, &case);
            let mine = run(ours(), version, &case);
            assert_eq!(theirs.initial, mine.initial, "{at}: the worlds differ");
            assert_eq!(theirs.result, mine.result, "{at}: result");
            assert_eq!(theirs.after_add, mine.after_add, "{at}: kernel after ADD");
            for key in REFERENCE_STATE_KEYS {
                assert_eq!(theirs.saved[key], mine.saved[key], "{at}: saved {key}");
            }
            if let Some(Err(e)) = &mine.check {
                panic!("{at}: CHECK failed: {e}");
            }
            if let Some(Err(e)) = &theirs.check {
                assert!(
                    e.contains("IFNAME") || e.contains("tcp_rmem"),
                    "{at}: reference CHECK failed unexpectedly: {e}"
                );
            }
            assert_eq!(theirs.after_del, mine.after_del, "{at}: kernel after DEL");
            assert!(
                theirs.files_after_del.is_empty(),
                "{at}: reference left files"
            );
            assert!(mine.files_after_del.is_empty(), "{at}: we left files");
            // DEL restores the interface; neither puts sysctls back (see README).
            let mut restored = mine.after_del.clone();
            restored.sysctls = mine.initial.sysctls.clone();
            assert_eq!(restored, mine.initial, "{at}: interface not restored");
        }
        // The MAC in the result is the new one (it is only there when a case set one).
        let every = &cases()[1];
        let mine = run(ours(), version, every);
        assert_eq!(mine.result["interfaces"][2]["mac"], "0a:58:c6:12:00:09");
        assert_eq!(mine.result["interfaces"][2]["sandbox"], SANDBOX);
        assert_eq!(
            mine.result["interfaces"][0],
            prev_result(version)["interfaces"][0]
        );
        assert_eq!(mine.after_add.mtu, 1400);
    }
}

/// The saved-values files are interchangeable: either implementation's DEL restores what the
/// other's ADD changed, and removes its file.
#[test]
fn each_restores_what_the_other_saved() {
    require_root();
    for (adder, deleter) in [(reference(), ours()), (ours(), reference())] {
        let world = World::new();
        let conf = world.conf("1.0.0", full_keys("0a:58:c6:12:00:09"));
        let initial = world.kernel();
        let result = world.call(adder, "ADD", &conf).expect_success();
        assert_ne!(world.kernel(), initial);
        world
            .call(deleter, "DEL", &with_prev(&conf, &result))
            .expect_success();
        let mut after = world.kernel();
        after.sysctls = initial.sysctls.clone();
        assert_eq!(after, initial, "ADD by {adder}, DEL by {deleter}");
        assert!(world.saved_files().is_empty(), "{:?}", world.saved_files());
    }
}

struct Bad {
    what: &'static str,
    /// The configuration itself is wrong: the reference says 999 (every error of its tuning
    /// is a plain Go error), ours says 7 (invalid configuration), as the spec has it.
    config: bool,
    keys: Value,
    cni_args: &'static str,
    ifname: &'static str,
    drop_prev: bool,
}

fn bad(what: &'static str, keys: Value) -> Bad {
    Bad {
        what,
        config: true,
        keys,
        cni_args: "",
        ifname: IFNAME,
        drop_prev: false,
    }
}

/// What the kernel or the system refuses: 999 from both.
fn system(what: &'static str, keys: Value) -> Bad {
    Bad {
        config: false,
        ..bad(what, keys)
    }
}

fn bad_cases() -> Vec<Bad> {
    // Every case also asks for an attribute change where that makes sense, so that "nothing
    // changed" covers the interface and the saved-values file too.
    vec![
        bad(
            "sysctl outside net",
            json!({"sysctl": {"kernel.hostname": "tuning"}, "mtu": 1400}),
        ),
        bad(
            "sysctl with ..",
            json!({"sysctl": {"net/../kernel/hostname": "tuning"}}),
        ),
        bad(
            "sysctl as an absolute path outside net",
            json!({"sysctl": {"/proc/sys/kernel/hostname": "tuning"}}),
        ),
        system(
            "sysctl that does not exist, after a good one",
            json!({"sysctl": {"net.core.somaxconn": "1024", "net.core.berth_nope": "1"},
                   "mtu": 1400}),
        ),
        system(
            "sysctl value the kernel refuses, after a good one",
            json!({"sysctl": {"net.ipv4.ip_forward": "1", "net.core.somaxconn": "many"}}),
        ),
        Bad {
            ifname: "nope0",
            ..system(
                "unknown interface",
                json!({"sysctl": {"net.core.somaxconn": "1024"}, "mac": "0a:58:c6:12:00:09"}),
            )
        },
        bad("bad MAC", json!({"mac": "zz", "mtu": 1400})),
        bad(
            "multicast MAC",
            json!({"mac": "01:00:5e:00:00:01", "sysctl": {"net.core.somaxconn": "1024"}}),
        ),
        Bad {
            cni_args: "IgnoreUnknown=1;MAC=0a:58:c6",
            ..bad("bad CNI_ARGS MAC", json!({"mtu": 1400}))
        },
        system(
            "MTU the kernel refuses, after MAC and promiscuous mode",
            json!({"sysctl": {"net.core.somaxconn": "1024"}, "mac": "0a:58:c6:12:00:09",
                   "promisc": true, "mtu": 100_000}),
        ),
        bad("negative MTU", json!({"mtu": -1, "allmulti": true})),
        Bad {
            drop_prev: true,
            ..bad(
                "missing prevResult",
                json!({"mtu": 1400, "sysctl": {"net.core.somaxconn": "1024"}}),
            )
        },
    ]
}

fn run_bad(bin: &str, version: &str, case: &Bad) -> (u64, World, Kernel) {
    let world = World::new();
    let mut conf = world.conf(version, case.keys.clone());
    if case.drop_prev {
        conf = without_prev(&conf);
    }
    let before = world.kernel();
    let out = world.call_with(bin, "ADD", &conf, case.cni_args, case.ifname);
    (error_code(&out), world, before)
}

#[test]
fn bad_input_fails_like_the_reference_and_changes_nothing() {
    require_root();
    for (i, case) in bad_cases().iter().enumerate() {
        // The code does not depend on the version; spread the cases over all of them.
        let version = REF_VERSIONS[i % REF_VERSIONS.len()];
        let at = format!("{version}, {}", case.what);
        let (their_code, _, _) = run_bad(reference(), version, case);
        let (code, world, before) = run_bad(ours(), version, case);
        if case.config {
            assert_eq!(
                (code, their_code),
                (7, 999),
                "{at}: error codes (ours, reference)"
            );
        } else {
            assert_eq!(code, their_code, "{at}: error code");
        }
        assert_eq!(world.kernel(), before, "{at}: kernel changed");
        assert!(
            world.saved_files().is_empty(),
            "{at}: {:?}",
            world.saved_files()
        );
    }
}
