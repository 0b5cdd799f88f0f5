//! Our plugin alone: every version including 1.1.0 (CHECK, STATUS, GC), `txQLen`, DEL in the
//! cases the reference gets wrong or never meets, rollback of a failed ADD, re-ADD, and the
//! podman chain (our bridge, then `{"type": "tuning"}`).

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::fs;
use std::path::Path;

use berth_netlink::format_mac;
use common::*;
use netns_fixtures::{
    CniCall, HostAndContainer, TestNetns, bin, require_root, test_subnet_v4, unique_name,
};
use serde_json::{Value, json};

/// The interface part of the kernel state (DEL restores it; sysctls stay).
fn iface(k: &Kernel) -> Kernel {
    Kernel {
        sysctls: Vec::new(),
        ..k.clone()
    }
}

#[test]
fn add_check_del_in_every_version_with_txqlen() {
    require_root();
    for version in VERSIONS {
        let world = World::new();
        let mut keys = full_keys("0a:58:c6:12:00:09");
        keys["txQLen"] = 500.into();
        let conf = world.conf(version, keys);
        let initial = world.kernel();

        let result = world.call(ours(), "ADD", &conf).expect_success();
        assert_eq!(result["cniVersion"], version);
        let eth0 = &result["interfaces"][2];
        assert_eq!(eth0["mac"], "0a:58:c6:12:00:09", "{version}");
        // The interface MTU is a 1.1.0 field: updated there, absent before.
        match version {
            "1.1.0" => assert_eq!(eth0["mtu"], 1400),
            _ => assert!(eth0.get("mtu").is_none(), "{version}: {result}"),
        }
        let k = world.kernel();
        assert_eq!(
            (k.mac.as_str(), k.mtu, k.promisc, k.allmulti, k.txqlen),
            ("0a:58:c6:12:00:09", 1400, true, true, 500),
            "{version}"
        );
        let sysctl =
            |k: &Kernel, key: &str| k.sysctls.iter().find(|(n, _)| n == key).unwrap().1.clone();
        assert_eq!(sysctl(&k, "net/core/somaxconn"), "1024");
        assert_eq!(sysctl(&k, "net/ipv4/conf/eth0/arp_filter"), "1");
        assert_eq!(sysctl(&k, "net/ipv4/tcp_rmem"), "4096\t65536\t1048576");
        assert_eq!(world.saved()["txQLen"], initial.txqlen);

        let conf = with_prev(&conf, &result);
        if version >= "0.4.0" {
            world.call(ours(), "CHECK", &conf).expect_success();
            // Something else changed the MTU: CHECK says so, with the reference's code.
            let nl = world.env.ctr.netlink();
            let link = nl.link_by_name(IFNAME).unwrap().unwrap();
            nl.set_mtu(link.index, 1300).unwrap();
            let out = world.call(ours(), "CHECK", &conf);
            assert_eq!(error_code(&out), 999, "{out:?}");
            assert!(out.stdout.contains("mtu"), "{out:?}");
            nl.set_mtu(link.index, 1400).unwrap();
        } else {
            assert_eq!(error_code(&world.call(ours(), "CHECK", &conf)), 1);
        }
        world.call(ours(), "DEL", &conf).expect_success();
        assert_eq!(iface(&world.kernel()), iface(&initial), "{version}");
        assert!(world.saved_files().is_empty());
    }
}

#[test]
fn status_gc_and_version_in_1_1_0() {
    require_root();
    let world = World::new();
    let conf = world.conf("1.1.0", json!({"mtu": 1400}));
    let status = |conf: &Value| {
        CniCall::new(ours())
            .command("STATUS")
            .path(&[Path::new("/nonexistent")])
            .stdin_json(conf)
            .run_in(&world.env.host)
            .unwrap()
    };
    assert_eq!(status(&conf).expect_success(), Value::Null);
    let mut broken = conf.clone();
    broken["sysctl"] = json!({"kernel.hostname": "x"});
    assert_eq!(error_code(&status(&broken)), 7);
    for old in REF_VERSIONS {
        let mut conf = conf.clone();
        conf["cniVersion"] = old.into();
        assert_eq!(error_code(&status(&conf)), 1, "{old}");
    }

    // Three attachments of this network (same interface, three container ids), one of
    // another network, and a file the reference wrote (it names no network).
    let ids = [unique_name("ga"), unique_name("gb"), unique_name("gc")];
    for id in &ids {
        let out = CniCall::new(ours())
            .command("ADD")
            .container_id(id)
            .netns(world.env.ctr.path())
            .ifname(IFNAME)
            .path(&[Path::new("/nonexistent")])
            .stdin_json(&conf)
            .run_in(&world.env.host)
            .unwrap();
        out.expect_success();
    }
    let other = world.data_dir().join("other_eth0.json");
    fs::write(
        &other,
        r#"{"mtu": 1500, "network": "other-net", "containerID": "other", "ifname": "eth0"}"#,
    )
    .unwrap();
    let theirs = world.data_dir().join("theirs_eth0.json");
    fs::write(&theirs, "{\n \"mtu\": 1500\n}").unwrap();

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([
        {"containerID": ids[0], "ifname": IFNAME},
        {"containerID": ids[1], "ifname": "eth9"},
    ]);
    CniCall::new(ours())
        .command("GC")
        .path(&[Path::new("/nonexistent")])
        .stdin_json(&gc)
        .run_in(&world.env.host)
        .unwrap()
        .expect_success();
    let mut expected = vec![
        format!("{}_{IFNAME}.json", ids[0]),
        "other_eth0.json".to_owned(),
        "theirs_eth0.json".to_owned(),
    ];
    expected.sort();
    assert_eq!(world.saved_files(), expected);

    let version = CniCall::new(ours())
        .command("VERSION")
        .stdin(r#"{"cniVersion": "1.1.0"}"#)
        .run_in(&world.env.host)
        .unwrap()
        .expect_success();
    assert_eq!(version["supportedVersions"], json!(VERSIONS));
}

#[test]
fn del_is_idempotent_and_tolerates_what_is_gone() {
    require_root();
    let keys = json!({"mac": "0a:58:c6:12:00:09", "mtu": 1400, "allmulti": true});

    // Twice in a row: the second has nothing to do.
    let world = World::new();
    let conf = world.conf("1.0.0", keys.clone());
    let initial = world.kernel();
    world.call(ours(), "ADD", &conf).expect_success();
    for _ in 0..2 {
        world.call(ours(), "DEL", &conf).expect_success();
        assert_eq!(world.kernel(), initial);
        assert!(world.saved_files().is_empty());
    }

    // The saved-values file is missing: nothing to restore, DEL still succeeds.
    let world = World::new();
    let conf = world.conf("1.0.0", keys.clone());
    world.call(ours(), "ADD", &conf).expect_success();
    let tuned = world.kernel();
    fs::remove_file(world.data_dir().join(format!("{}_{IFNAME}.json", world.id))).unwrap();
    world.call(ours(), "DEL", &conf).expect_success();
    assert_eq!(world.kernel(), tuned);

    // The namespace is gone (the reference keeps the file forever here).
    let world = World::new();
    let ns = TestNetns::with_tag("g").unwrap();
    add_eth0(&ns);
    let ns_path = ns.path().to_path_buf();
    let conf = world.conf("1.0.0", keys.clone());
    let call = |command: &str, netns: &Path| {
        CniCall::new(ours())
            .command(command)
            .container_id(&world.id)
            .netns(netns)
            .ifname(IFNAME)
            .path(&[Path::new("/nonexistent")])
            .stdin_json(&conf)
            .run_in(&world.env.host)
            .unwrap()
    };
    call("ADD", &ns_path).expect_success();
    assert_eq!(world.saved_files().len(), 1);
    drop(ns);
    call("DEL", &ns_path).expect_success();
    assert!(world.saved_files().is_empty());
    call("DEL", &ns_path).expect_success();

    // No CNI_NETNS at all.
    world.call(ours(), "ADD", &conf).expect_success();
    CniCall::new(ours())
        .command("DEL")
        .container_id(&world.id)
        .ifname(IFNAME)
        .path(&[Path::new("/nonexistent")])
        .stdin_json(&conf)
        .run_in(&world.env.host)
        .unwrap()
        .expect_success();
    assert!(world.saved_files().is_empty());

    // The interface is gone (the main plugin's DEL ran first).
    world.call(ours(), "ADD", &conf).expect_success();
    let nl = world.env.ctr.netlink();
    nl.del_link(nl.link_by_name(IFNAME).unwrap().unwrap().index)
        .unwrap();
    world.call(ours(), "DEL", &conf).expect_success();
    assert!(world.saved_files().is_empty());

    // A configuration ADD would refuse is still torn down: DEL only reads dataDir.
    let world = World::new();
    let conf = world.conf("1.0.0", keys);
    let initial = world.kernel();
    world.call(ours(), "ADD", &conf).expect_success();
    let mut broken = conf.clone();
    broken["mac"] = "zz".into();
    broken["sysctl"] = json!({"kernel.hostname": "x"});
    world.call(ours(), "DEL", &broken).expect_success();
    assert_eq!(world.kernel(), initial);
}

#[test]
fn failed_add_leaves_everything_as_it_was() {
    require_root();
    // Each fails after earlier steps succeeded: a sysctl after another sysctl, the MTU after
    // the sysctls, the saved-values file, MAC and promiscuous mode.
    for keys in [
        json!({"sysctl": {"net.ipv4.ip_forward": "1", "net.core.somaxconn": "1024",
                          "net.core.berth_nope": "1"}, "mtu": 1400}),
        json!({"sysctl": {"net.core.somaxconn": "1024"}, "mac": "0a:58:c6:12:00:09",
               "promisc": true, "allmulti": true, "mtu": 100_000}),
        json!({"mac": "0a:58:c6:12:00:09", "txQLen": 500, "mtu": 100_000}),
    ] {
        let world = World::new();
        let before = world.kernel();
        let out = world.call(ours(), "ADD", &world.conf("1.0.0", keys.clone()));
        assert_eq!(error_code(&out), 999, "{keys}: {out:?}");
        assert_eq!(world.kernel(), before, "{keys}");
        assert!(world.saved_files().is_empty(), "{keys}");
    }

    // A failed second ADD of the same attachment puts the first one's file back as it was.
    let world = World::new();
    world
        .call(ours(), "ADD", &world.conf("1.0.0", json!({"mtu": 1400})))
        .expect_success();
    let file = world.data_dir().join(format!("{}_{IFNAME}.json", world.id));
    let first = fs::read(&file).unwrap();
    let tuned = world.kernel();
    let out = world.call(
        ours(),
        "ADD",
        &world.conf("1.0.0", json!({"mac": "0a:58:c6:12:00:09", "mtu": 100_000})),
    );
    assert_eq!(error_code(&out), 999);
    assert_eq!(world.kernel(), tuned);
    assert_eq!(fs::read(&file).unwrap(), first);
    assert_eq!(world.saved_files().len(), 1, "{:?}", world.saved_files());
}

/// Found by the fuzz harness (berth-fuzz): with CNI_IFNAME=lo, ADD saved lo's MAC (all
/// zeros) and set the configured one, which the kernel allows; DEL could then never put the
/// all-zero address back (the kernel refuses it, and so did our own check of the saved value)
/// and failed every time, leaving lo with the configured MAC. ADD now refuses a MAC change it
/// could not undo, before touching anything.
#[test]
fn a_mac_change_del_could_not_undo_is_refused() {
    require_root();
    let world = World::new();
    let lo_mac = |w: &World| {
        let nl = w.env.ctr.netlink();
        format_mac(&nl.link_by_name("lo").unwrap().unwrap().mac.unwrap())
    };
    let before = world.kernel();
    let conf = world.conf(
        "1.0.0",
        json!({"mac": "c2:b0:57:49:47:f1", "sysctl": {"net.core.somaxconn": "1000"}}),
    );
    let out = world.call_with(ours(), "ADD", &conf, "", "lo");
    assert_eq!(error_code(&out), 999, "{out:?}");
    assert!(out.stdout.contains("could not be put back"), "{out:?}");
    assert_eq!(lo_mac(&world), "00:00:00:00:00:00");
    assert_eq!(world.kernel(), before, "the sysctl was put back too");
    assert!(world.saved_files().is_empty());
    world
        .call_with(ours(), "DEL", &conf, "", "lo")
        .expect_success();
}

#[test]
fn re_add_keeps_the_original_values() {
    require_root();
    let world = World::new();
    let initial = world.kernel();
    for mtu in [1400, 1300] {
        let conf = world.conf("1.0.0", json!({"mtu": mtu, "mac": "0a:58:c6:12:00:09"}));
        world.call(ours(), "ADD", &conf).expect_success();
    }
    assert_eq!(world.saved()["mtu"], initial.mtu);
    assert_eq!(world.saved()["mac"], initial.mac);
    world
        .call(ours(), "DEL", &world.conf("1.0.0", json!({})))
        .expect_success();
    assert_eq!(world.kernel(), initial);
}

/// podman 4.3 (CNI backend) writes bridge + portmap + firewall + `{"type": "tuning"}`: with
/// no keys at all, tuning passes the bridge's result through unchanged, in every version.
#[test]
fn no_keys_after_our_bridge_in_every_version() {
    require_root();
    let cni_path = bin("host-local").parent().unwrap().to_path_buf();
    for version in VERSIONS {
        let env = HostAndContainer::new().unwrap();
        let id = unique_name("pm");
        let bridge = unique_name("br");
        let call = |plugin: &Path, command: &str, conf: &Value| {
            CniCall::new(plugin)
                .command(command)
                .container_id(&id)
                .netns(env.ctr.path())
                .ifname(IFNAME)
                .path(&[&cni_path])
                .stdin_json(conf)
                .run_in(&env.host)
                .unwrap()
        };
        let bridge_conf = json!({
            "cniVersion": version, "name": "podman", "type": "bridge",
            "bridge": bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
            "ipam": {"type": "host-local", "dataDir": env.data_dir(),
                     "ranges": [[{"subnet": test_subnet_v4().to_string()}]],
                     "routes": [{"dst": "0.0.0.0/0"}]},
        });
        let bridged = call(&bin("bridge"), "ADD", &bridge_conf).expect_success();
        let before = kernel(&env.ctr);
        // Exactly podman's entry, plus what libcni adds.
        let tuning_conf = json!({"cniVersion": version, "name": "podman", "type": "tuning",
                                 "prevResult": bridged});
        let tuned = call(Path::new(ours()), "ADD", &tuning_conf).expect_success();
        assert_eq!(tuned, bridged, "{version}");
        assert_eq!(kernel(&env.ctr), before, "{version}");
        let tuning_conf = with_prev(&tuning_conf, &tuned);
        if version >= "0.4.0" {
            call(Path::new(ours()), "CHECK", &tuning_conf).expect_success();
        }
        call(Path::new(ours()), "DEL", &tuning_conf).expect_success();
        // The bridge itself goes with the host namespace.
        call(&bin("bridge"), "DEL", &with_prev(&bridge_conf, &tuned)).expect_success();
    }
}

/// Keys spelled differently from the reference's JSON tags, which Go (and so the reference)
/// matches case-insensitively. This relies on berth-cni matching config keys the way Go's
/// encoding/json does (the lead's change to berth-cni); it fails until that has landed.
/// `dataDir` keeps its exact spelling: without the new matching our plugin would otherwise
/// fall back to the host's real /run/cni/tuning.
#[test]
fn keys_match_case_insensitively_like_go() {
    require_root();
    for bin in [reference(), ours()] {
        let world = World::new();
        let initial = world.kernel();
        let conf = world.conf(
            "1.0.0",
            json!({
                "SysCtl": {"net.core.somaxconn": "1024"},
                "Mac": "0a:58:c6:12:00:09",
                "MTU": 1400,
                "Promisc": true,
                "AllMulti": true,
                "RuntimeConfig": {"MAC": "0a:58:c6:12:00:0a"},
                "Args": {"CNI": {"Mtu": 1300}},
            }),
        );
        let result = world.call(bin, "ADD", &conf).expect_success();
        assert_eq!(result["interfaces"][2]["mac"], "0a:58:c6:12:00:0a", "{bin}");
        let k = world.kernel();
        assert_eq!(
            (k.mac.as_str(), k.mtu, k.promisc, k.allmulti),
            ("0a:58:c6:12:00:0a", 1300, true, true),
            "{bin}"
        );
        assert_eq!(k.sysctls[0].1, "1024", "{bin}");
        world.call(bin, "DEL", &conf).expect_success();
        assert_eq!(iface(&world.kernel()), iface(&initial), "{bin}");
    }
    // txQLen is not in the reference we compare with (1.1.1): ours alone.
    let world = World::new();
    let conf = world.conf("1.0.0", json!({"TXQLEN": 500}));
    world.call(ours(), "ADD", &conf).expect_success();
    assert_eq!(world.kernel().txqlen, 500);
    world.call(ours(), "DEL", &conf).expect_success();
    assert_eq!(world.kernel().txqlen, 1000);
}

/// Found by the fuzz harness (berth-fuzz): with a 255-byte CNI_CONTAINERID, a sysctl-only ADD
/// succeeded (it saves nothing), but DEL failed with "File name too long" looking for the
/// saved-values file `<id>_<ifname>.json`, which no file can be named: it failed forever.
#[test]
fn del_succeeds_when_no_saved_values_file_can_have_the_name() {
    require_root();
    let world = World::new();
    let id = "y".repeat(255);
    let conf = world.conf("1.0.0", json!({"sysctl": {"net.core.somaxconn": "1000"}}));
    let call = |command: &str| {
        CniCall::new(ours())
            .command(command)
            .container_id(&id)
            .netns(world.env.ctr.path())
            .ifname(IFNAME)
            .path(&[Path::new("/nonexistent")])
            .stdin_json(&conf)
            .run_in(&world.env.host)
            .unwrap()
    };
    call("ADD").expect_success();
    call("DEL").expect_success();
    // With an attribute to save, ADD cannot keep the promise to put it back: it refuses.
    let conf = world.conf("1.0.0", json!({"mtu": 1400}));
    let before = world.kernel();
    let out = CniCall::new(ours())
        .command("ADD")
        .container_id(&id)
        .netns(world.env.ctr.path())
        .ifname(IFNAME)
        .path(&[Path::new("/nonexistent")])
        .stdin_json(&conf)
        .run_in(&world.env.host)
        .unwrap();
    assert!(!out.success(), "{out:?}");
    assert_eq!(iface(&world.kernel()), iface(&before));
}
