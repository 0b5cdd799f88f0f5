//! Side by side with the reference plugin (Debian's containernetworking-plugins 1.1.1 in
//! /usr/lib/cni): the same configurations, for every version it supports, give equivalent
//! results, the same kernel state in the container, and nothing left after DEL; bad input
//! gets the same error code. Each implementation runs in a world of its own (fresh namespaces
//! and IPAM directory), so both hand out the same addresses.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use common::*;
use netns_fixtures::{TestNetns, require_root, test_subnet_v4, test_subnet_v6};
use serde_json::{Value, json};

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

/// One version's case: the configuration's extra keys, CNI_ARGS, whether the MAC is chosen
/// (then compared), and whether the master comes from the host's default route.
struct Case {
    version: &'static str,
    extra: Value,
    cni_args: &'static str,
    mac: Option<&'static str>,
    default_route_master: bool,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            version: "0.3.0",
            extra: json!({"mode": "bridge", "mac": "02:42:c6:12:00:30",
                "dns": {"nameservers": ["198.18.0.53"], "search": ["example.test"]}}),
            cni_args: "",
            mac: Some("02:42:c6:12:00:30"),
            default_route_master: false,
        },
        Case {
            version: "0.3.1",
            extra: json!({"mode": "private", "mtu": 1300, "mac": "02:42:c6:12:00:31"}),
            // CNI_ARGS MAC= wins over the key.
            cni_args: "IgnoreUnknown=1;MAC=02:42:c6:12:00:32",
            mac: Some("02:42:c6:12:00:32"),
            default_route_master: false,
        },
        Case {
            version: "0.4.0",
            extra: json!({"mode": "vepa", "master": null}),
            cni_args: "",
            mac: None,
            default_route_master: true,
        },
        Case {
            version: "1.0.0",
            // runtimeConfig.mac (the `mac` capability) wins over CNI_ARGS and the key.
            extra: json!({"mode": "", "mtu": 0, "mac": "02:42:c6:12:00:34",
                "runtimeConfig": {"mac": "02:42:c6:12:00:33"}}),
            cni_args: "IgnoreUnknown=1;MAC=02:42:c6:12:00:35",
            mac: Some("02:42:c6:12:00:33"),
            default_route_master: false,
        },
    ]
}

/// ADD, CHECK (0.4.0+), DEL twice; returns the result, the sandbox path and the snapshot.
fn run_case(imp: &Impl, case: &Case, subnet: &str) -> (Value, String, Value) {
    let world = World::new();
    if case.default_route_master {
        let gw = nth(subnet, 254);
        world
            .host()
            .ip(&[
                "addr",
                "add",
                &format!("{}/24", nth(subnet, 253)),
                "dev",
                &world.parent,
            ])
            .unwrap();
        world
            .host()
            .ip(&["route", "add", "default", "via", &gw, "dev", &world.parent])
            .unwrap();
    }
    let mut ipam = world.ipam(subnet);
    ipam["routes"] =
        json!([{"dst": "0.0.0.0/0"}, {"dst": "198.19.0.0/16", "gw": nth(subnet, 254)}]);
    let conf = world.conf(case.version, ipam, case.extra.clone());
    let call = Call {
        cni_args: case.cni_args,
        ..Call::new(imp, &world)
    };
    let result = call.ok("ADD", &conf);
    let state = snapshot(world.ctr(), "eth0", case.mac.is_some());
    if case.version != "0.3.0" && case.version != "0.3.1" {
        call.ok("CHECK", &with_prev(&conf, &result));
    }
    call.ok("DEL", &with_prev(&conf, &result));
    call.ok("DEL", &with_prev(&conf, &result));
    assert_clean(
        &format!("{} {}", imp.name, case.version),
        world.ctr(),
        &[],
        &world.data_dir(),
    );
    let sandbox = world.ctr().path().to_string_lossy().into_owned();
    (result, sandbox, state)
}

fn assert_equivalent(what: &str, theirs: &Value, their_ns: &str, mine: &Value, my_ns: &str) {
    for key in ["cniVersion", "ips", "routes", "dns"] {
        assert_eq!(theirs[key], mine[key], "{what}: {key}:\n{theirs}\n{mine}");
    }
    let (ti, mi) = (
        theirs["interfaces"].as_array().unwrap(),
        mine["interfaces"].as_array().unwrap(),
    );
    assert_eq!((ti.len(), mi.len()), (1, 1), "{what}:\n{theirs}\n{mine}");
    assert_eq!(keys(&ti[0]), keys(&mi[0]), "{what}: interface keys");
    assert_eq!(ti[0]["name"], mi[0]["name"]);
    assert_eq!(ti[0]["sandbox"], their_ns);
    assert_eq!(mi[0]["sandbox"], my_ns);
    assert_eq!(mi[0]["mac"].as_str().unwrap().len(), 17, "{mine}");
}

#[test]
fn same_configs_give_equivalent_results_and_kernel_state() {
    require_root();
    let (reference, ours) = (reference(), ours());
    for case in cases() {
        let subnet = test_subnet_v4().to_string();
        let (theirs, their_ns, their_state) = run_case(&reference, &case, &subnet);
        let (mine, my_ns, my_state) = run_case(&ours, &case, &subnet);
        let what = format!("version {}", case.version);
        assert_equivalent(&what, &theirs, &their_ns, &mine, &my_ns);
        if let Some(mac) = case.mac {
            assert_eq!(mine["interfaces"][0]["mac"], mac, "{what}");
            assert_eq!(theirs["interfaces"][0]["mac"], mac, "{what}");
        }
        assert_eq!(their_state, my_state, "{what}: kernel state");
    }
}

#[test]
fn dual_stack_matches_the_reference() {
    require_root();
    let (v4, v6) = (test_subnet_v4().to_string(), test_subnet_v6().to_string());
    let mut outcomes = Vec::new();
    for imp in [reference(), ours()] {
        let world = World::new();
        let ipam = json!({"type": "host-local", "dataDir": world.data_dir(),
            "ranges": [[{"subnet": v4}], [{"subnet": v6}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]});
        let conf = world.conf("1.0.0", ipam, json!({}));
        let call = Call::new(&imp, &world);
        let result = call.ok("ADD", &conf);
        let state = snapshot(world.ctr(), "eth0", false);
        // Both wait for duplicate address detection: nothing is tentative when ADD returns.
        let tentative = world
            .ctr()
            .ip(&["-6", "addr", "show", "dev", "eth0", "tentative"])
            .unwrap();
        assert_eq!(tentative.trim(), "", "{}: tentative addresses", imp.name);
        call.ok("CHECK", &with_prev(&conf, &result));
        call.ok("DEL", &with_prev(&conf, &result));
        assert_clean(imp.name, world.ctr(), &[], &world.data_dir());
        let sandbox = world.ctr().path().to_string_lossy().into_owned();
        outcomes.push((result, sandbox, state));
    }
    let [(theirs, their_ns, their_state), (mine, my_ns, my_state)] =
        <[_; 2]>::try_from(outcomes).unwrap();
    assert_equivalent("dual stack", &theirs, &their_ns, &mine, &my_ns);
    assert_eq!(their_state, my_state, "kernel state");
}

/// 1.1.0 (ours only): `mtu` in the result, CHECK, STATUS, GC through host-local.
#[test]
fn version_1_1_0_with_status_and_gc() {
    require_root();
    let ours = ours();
    let world = World::new();
    let subnet = test_subnet_v4().to_string();
    let conf = world.conf("1.1.0", world.ipam(&subnet), json!({"mtu": 1280}));
    let call = Call::new(&ours, &world);
    let result = call.ok("ADD", &conf);
    assert_eq!(result["cniVersion"], "1.1.0");
    assert_eq!(result["interfaces"][0]["mtu"], 1280);
    assert_eq!(
        result["ips"][0]["address"],
        format!("{}/24", nth(&subnet, 2))
    );
    call.ok("CHECK", &with_prev(&conf, &result));
    call.ok("STATUS", &conf);

    // GC keeps what is listed and releases the rest.
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ctr-1", "ifname": "eth0"}]);
    call.ok("GC", &gc);
    assert_eq!(reservations(&world.data_dir()).len(), 1);
    gc["cni.dev/valid-attachments"] = json!([]);
    call.ok("GC", &gc);
    assert_eq!(reservations(&world.data_dir()), Vec::<String>::new());
    call.ok("DEL", &with_prev(&conf, &result));
    assert_clean("1.1.0", world.ctr(), &[], &world.data_dir());

    // STATUS cannot serve ADD without the master: code 50. Without ipam and linkInContainer
    // there is nothing else to ask.
    let gone = world.conf("1.1.0", Value::Null, json!({"master": "nosuchlink0"}));
    assert_eq!(call.fail("STATUS", &gone)["code"], 50);
    let in_ctr = world.conf(
        "1.1.0",
        Value::Null,
        json!({"master": "nosuchlink0", "linkInContainer": true}),
    );
    call.ok("STATUS", &in_ctr);
    // And the older versions refuse the new verbs, as berth-cni does for every plugin.
    let old = world.conf("1.0.0", Value::Null, json!({}));
    assert_eq!(call.fail("STATUS", &old)["code"], 1);
}

/// The code of a refused configuration: the reference's skel turns every plain error into 999.
fn config_code(imp: &Impl) -> u64 {
    if imp.name == "reference" { 999 } else { 7 }
}

/// Bad input: both implementations refuse it and ours leaves nothing. A configuration either
/// refuses is 999 from the reference (a plain Go error) and 7 from ours (invalid network
/// configuration, as in every Berth plugin); what the kernel refuses is 999 from both.
#[test]
fn bad_input_is_refused_like_the_reference_and_leaves_nothing() {
    require_root();
    let subnet = test_subnet_v4().to_string();
    let bad: Vec<(&str, Value)> = vec![
        ("unknown mode", json!({"mode": "foo"})),
        ("mode in capitals", json!({"mode": "Bridge"})),
        ("missing master", json!({"master": "nosuchlink0"})),
        ("no master, no default route", json!({"master": null})),
        ("mtu above the master's", json!({"mtu": PARENT_MTU + 1})),
        ("negative mtu", json!({"mtu": -1})),
        ("bad mac", json!({"mac": "zz"})),
        ("multicast mac", json!({"mac": "01:00:5e:00:00:01"})),
        ("eight-byte mac", json!({"mac": "02:00:00:00:00:00:00:01"})),
        (
            "bad runtimeConfig mac",
            json!({"runtimeConfig": {"mac": "02:00:00:00:00"}}),
        ),
    ];
    for imp in [reference(), ours()] {
        let world = World::new();
        let call = Call::new(&imp, &world);
        for (what, extra) in &bad {
            let conf = world.conf("1.0.0", world.ipam(&subnet), extra.clone());
            let err = call.fail("ADD", &conf);
            assert_eq!(err["code"], config_code(&imp), "{} {what}: {err}", imp.name);
            assert_clean(
                &format!("{} {what}", imp.name),
                world.ctr(),
                &[],
                &world.data_dir(),
            );
        }
        // CHECK without prevResult, and with another mode than the link's.
        let conf = world.conf("1.0.0", world.ipam(&subnet), json!({}));
        let result = call.ok("ADD", &conf);
        assert_eq!(
            call.fail("CHECK", &conf)["code"],
            config_code(&imp),
            "{}",
            imp.name
        );
        let mut vepa = with_prev(&conf, &result);
        vepa["mode"] = json!("vepa");
        let err = call.fail("CHECK", &vepa);
        assert_eq!(err["code"], 999, "{}", imp.name);
        assert!(
            err["msg"].as_str().unwrap().contains("mode bridge"),
            "{}: {err}",
            imp.name
        );
        // The same ADD again: CNI_IFNAME is taken in the container. The live attachment keeps
        // its reservation.
        assert_eq!(call.fail("ADD", &conf)["code"], 999, "{}", imp.name);
        assert_eq!(reservations(&world.data_dir()).len(), 1, "{}", imp.name);
        call.ok("CHECK", &with_prev(&conf, &result));
        call.ok("DEL", &with_prev(&conf, &result));
        assert_clean(imp.name, world.ctr(), &[], &world.data_dir());
    }
}

/// The kernel's passthru rules: one passthru macvlan per master and nothing beside it. Both
/// implementations pass the kernel's refusal on as 999; ours leaves nothing.
#[test]
fn passthru_takes_the_whole_master() {
    require_root();
    let subnet = test_subnet_v4().to_string();
    for imp in [reference(), ours()] {
        let world = World::new();
        let second = TestNetns::with_tag("c2").unwrap();
        let passthru = world.conf("1.0.0", world.ipam(&subnet), json!({"mode": "passthru"}));
        let first = Call::new(&imp, &world);
        let result = first.ok("ADD", &passthru);
        // Passthru puts the master in promiscuous mode (a counter the flags do not show).
        let parent = world
            .host()
            .ip(&["-d", "link", "show", &world.parent])
            .unwrap();
        assert!(parent.contains("promiscuity 1"), "{}: {parent}", imp.name);
        let other = Call {
            ctr: second.path(),
            id: "ctr-2",
            ..Call::new(&imp, &world)
        };
        for mode in ["passthru", "bridge"] {
            let conf = world.conf("1.0.0", world.ipam(&subnet), json!({"mode": mode}));
            let err = other.fail("ADD", &conf);
            assert_eq!(err["code"], 999, "{} second {mode}: {err}", imp.name);
            assert_eq!(
                links(second.netlink()),
                Vec::<String>::new(),
                "{}",
                imp.name
            );
            assert_eq!(reservations(&world.data_dir()).len(), 1, "{}", imp.name);
        }
        first.ok("DEL", &with_prev(&passthru, &result));
        assert_clean(imp.name, world.ctr(), &[], &world.data_dir());
    }
}

fn median(mut v: Vec<std::time::Duration>) -> std::time::Duration {
    v.sort();
    v[v.len() / 2]
}

/// Not part of the suite: `cargo test -p macvlan --test reference -- --ignored --nocapture`.
/// Ours is found with `netns_fixtures::bin`, so `BERTH_BIN_DIR=target/release` measures the
/// release build (macvlan and host-local).
#[test]
#[ignore = "timing measurement, run by hand"]
fn measure_add_and_del_against_the_reference() {
    use std::time::Instant;
    require_root();
    const ROUNDS: usize = 41;
    let release = netns_fixtures::bin("macvlan");
    let ours = Impl {
        name: "ours",
        cni_path: release.parent().unwrap().to_path_buf(),
        bin: release,
    };
    for imp in [reference(), ours] {
        let world = World::new();
        let mut ipam = world.ipam(&test_subnet_v4().to_string());
        ipam["routes"] = json!([{"dst": "0.0.0.0/0"}]);
        let conf = world.conf("1.0.0", ipam, json!({}));
        let (mut adds, mut dels) = (Vec::new(), Vec::new());
        for i in 0..ROUNDS {
            let id = format!("bench-{i}");
            let call = Call {
                id: &id,
                ..Call::new(&imp, &world)
            };
            let t = Instant::now();
            let r = call.ok("ADD", &conf);
            adds.push(t.elapsed());
            let t = Instant::now();
            call.ok("DEL", &with_prev(&conf, &r));
            dels.push(t.elapsed());
        }
        eprintln!(
            "{} ({}): ADD median {:?}, DEL median {:?} ({ROUNDS} rounds)",
            imp.name,
            imp.bin.display(),
            median(adds),
            median(dels)
        );
    }
}
