//! DEL is idempotent and tolerant (no netns, a vanished netns, a vanished master), and always
//! releases the IPAM reservation; `linkInContainer`; layer-2-only links; CHECK's findings.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use common::*;
use netns_fixtures::{TestNetns, require_root, test_subnet_v4};
use serde_json::{Value, json};

#[test]
fn del_is_idempotent_and_tolerates_a_missing_or_vanished_netns() {
    require_root();
    let ours = ours();
    let world = World::new();
    let subnet = test_subnet_v4().to_string();
    let conf = world.conf("1.0.0", world.ipam(&subnet), json!({}));

    // Twice, with and without prevResult.
    let call = Call::new(&ours, &world);
    let result = call.ok("ADD", &conf);
    call.ok("DEL", &with_prev(&conf, &result));
    call.ok("DEL", &conf);
    assert_clean("DEL twice", world.ctr(), &[], &world.data_dir());

    // The container's namespace is gone: the link went with it, the reservation is released.
    let doomed = TestNetns::with_tag("c2").unwrap();
    let path = doomed.path().to_path_buf();
    let in_doomed = Call {
        ctr: &path,
        id: "ctr-2",
        ..Call::new(&ours, &world)
    };
    in_doomed.ok("ADD", &conf);
    assert_eq!(reservations(&world.data_dir()).len(), 1);
    drop(doomed);
    assert!(!path.exists());
    in_doomed.ok("DEL", &conf);
    assert_eq!(reservations(&world.data_dir()), Vec::<String>::new());
    in_doomed.ok("DEL", &conf);

    // No CNI_NETNS at all (allowed for DEL): the reservation is released all the same.
    call.ok("ADD", &conf);
    let out = netns_fixtures::CniCall::new(&ours.bin)
        .command("DEL")
        .container_id("ctr-1")
        .ifname("eth0")
        .path(&[&ours.cni_path])
        .stdin_json(&conf)
        .run_in(world.host())
        .unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(reservations(&world.data_dir()), Vec::<String>::new());
    // ... and the link is left to a DEL that names the namespace (there is nothing else to
    // find it by), which still works.
    assert_eq!(links(world.ctr().netlink()), ["eth0"]);
    call.ok("DEL", &conf);
    assert_clean("DEL without netns", world.ctr(), &[], &world.data_dir());
}

#[test]
fn del_works_after_the_master_is_gone() {
    require_root();
    let ours = ours();
    let world = World::new();
    let conf = world.conf(
        "1.0.0",
        world.ipam(&test_subnet_v4().to_string()),
        json!({}),
    );
    let call = Call::new(&ours, &world);
    let result = call.ok("ADD", &conf);
    // Deleting the veth master deletes its macvlans too, wherever they are.
    world.host().ip(&["link", "del", &world.parent]).unwrap();
    call.ok("DEL", &with_prev(&conf, &result));
    assert_clean("master gone", world.ctr(), &[], &world.data_dir());
}

#[test]
fn layer2_only_without_ipam() {
    require_root();
    let ours = ours();
    let world = World::new();
    for (version, ipam) in [("1.0.0", Value::Null), ("0.4.0", json!({}))] {
        let conf = world.conf(version, ipam, json!({"mac": "02:42:c6:12:00:40"}));
        let call = Call::new(&ours, &world);
        let result = call.ok("ADD", &conf);
        assert_eq!(result["ips"], Value::Null, "{result}");
        assert_eq!(result["interfaces"][0]["mac"], "02:42:c6:12:00:40");
        let state = snapshot(world.ctr(), "eth0", true);
        assert_eq!(state["up"], true);
        assert_eq!(state["addrs"], json!([]));
        assert_eq!(state["mtu"], PARENT_MTU);
        call.ok("CHECK", &with_prev(&conf, &result));
        call.ok("DEL", &with_prev(&conf, &result));
        assert_clean(version, world.ctr(), &[], &world.data_dir());
    }
}

/// The master lives in the container's namespace: named, or found by the container's default
/// route. The host is not involved.
#[test]
fn link_in_container() {
    require_root();
    let ours = ours();
    let world = World::new();
    let ctr = world.ctr();
    ctr.ip(&["link", "add", "m0", "type", "veth", "peer", "name", "m1"])
        .unwrap();
    ctr.ip(&["link", "set", "m0", "mtu", "1450", "up"]).unwrap();
    ctr.ip(&["link", "set", "m1", "up"]).unwrap();
    ctr.ip(&["addr", "add", "198.19.250.2/24", "dev", "m0"])
        .unwrap();
    ctr.ip(&[
        "route",
        "add",
        "default",
        "via",
        "198.19.250.1",
        "dev",
        "m0",
    ])
    .unwrap();
    let m0 = ctr.netlink().link_by_name("m0").unwrap().unwrap();
    let subnet = test_subnet_v4().to_string();
    for master in [json!("m0"), Value::Null] {
        let conf = world.conf(
            "1.0.0",
            world.ipam(&subnet),
            json!({"master": master, "linkInContainer": true, "mode": "vepa"}),
        );
        let call = Call::new(&ours, &world);
        let result = call.ok("ADD", &conf);
        let link = ctr.netlink().link_by_name("eth0").unwrap().unwrap();
        assert_eq!(link.link_index, Some(m0.index), "{master}");
        assert_eq!(link.netns_id, None, "{master}: beside its master");
        assert_eq!(link.mtu, 1450);
        call.ok("CHECK", &with_prev(&conf, &result));
        // Over the MTU of the container's master.
        let mut big = conf.clone();
        big["mtu"] = json!(1451);
        assert_eq!(call.fail("CHECK", &with_prev(&big, &result))["code"], 7);
        call.ok("DEL", &with_prev(&conf, &result));
        assert_clean("linkInContainer", ctr, &["m0", "m1"], &world.data_dir());
    }
    // Without linkInContainer, m0 is looked for in the host: not there.
    let conf = world.conf("1.0.0", world.ipam(&subnet), json!({"master": "m0"}));
    let err = Call::new(&ours, &world).fail("ADD", &conf);
    assert_eq!(err["code"], 7);
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains("the host's namespace"),
        "{err}"
    );
    assert_clean("m0 not in host", ctr, &["m0", "m1"], &world.data_dir());
}

/// CHECK reports every difference from prevResult at once.
#[test]
fn check_reports_every_difference() {
    require_root();
    let ours = ours();
    let world = World::new();
    let subnet = test_subnet_v4().to_string();
    let mut ipam = world.ipam(&subnet);
    ipam["routes"] = json!([{"dst": "198.19.0.0/16"}]);
    let conf = world.conf("1.1.0", ipam, json!({}));
    let call = Call::new(&ours, &world);
    let result = call.ok("ADD", &conf);
    let ctr = world.ctr();
    ctr.ip(&["route", "del", "198.19.0.0/16"]).unwrap();
    ctr.ip(&["addr", "flush", "dev", "eth0"]).unwrap();
    let mut prev = result.clone();
    prev["interfaces"][0]["mac"] = json!("02:00:00:00:00:99");
    prev["interfaces"][0]["mtu"] = json!(1280);
    let err = call.fail("CHECK", &with_prev(&conf, &prev));
    assert_eq!(err["code"], 999);
    let msg = err["msg"].as_str().unwrap();
    for expected in [
        "Mac 02:00:00:00:00:99",
        "MTU 1280",
        "address",
        "198.19.0.0/16",
    ] {
        assert!(msg.contains(expected), "{expected} missing from: {msg}");
    }
    assert!(msg.starts_with("CHECK found 4 problems"), "{msg}");
    // Another sandbox than prevResult's.
    let mut elsewhere = result.clone();
    elsewhere["interfaces"][0]["sandbox"] = json!("/run/netns/elsewhere");
    let err = call.fail("CHECK", &with_prev(&conf, &elsewhere));
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains("prevResult has no interface eth0"),
        "{err}"
    );
    call.ok("DEL", &with_prev(&conf, &result));
    assert_clean("check", ctr, &[], &world.data_dir());
}

/// IPv6 duplicate address detection: an address already in use on the segment fails the ADD
/// (and leaves nothing); on a master without carrier DAD cannot run, so ADD does not wait.
#[test]
fn ipv6_duplicate_address_detection() {
    require_root();
    let ours = ours();
    let world = World::new();
    let v6 = netns_fixtures::test_subnet_v6();
    let taken = format!("{}/64", v6.nth(2).unwrap());
    // The far end of the master's cable already holds the address host-local hands out first.
    world
        .host()
        .ip(&["addr", "add", &taken, "dev", &world.peer, "nodad"])
        .unwrap();
    let ipam = json!({"type": "host-local", "dataDir": world.data_dir(),
        "ranges": [[{"subnet": v6.to_string()}]]});
    let conf = world.conf("1.0.0", ipam, json!({}));
    let call = Call::new(&ours, &world);
    let err = call.fail("ADD", &conf);
    assert_eq!(err["code"], 999, "{err}");
    assert!(
        err["msg"].as_str().unwrap().contains("already in use"),
        "{err}"
    );
    assert_clean("duplicate", world.ctr(), &[], &world.data_dir());

    // No carrier: the cable's far end is down.
    world
        .host()
        .ip(&["link", "set", &world.peer, "down"])
        .unwrap();
    let started = std::time::Instant::now();
    let result = call.ok("ADD", &conf);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "ADD waited {:?} for DAD without carrier",
        started.elapsed()
    );
    call.ok("DEL", &with_prev(&conf, &result));
    assert_clean("no carrier", world.ctr(), &[], &world.data_dir());
}
