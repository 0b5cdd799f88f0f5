//! Container-to-container mode, through the binary.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::net::IpAddr;

use common::*;
use netns_fixtures::{HostAndContainer, TestNetns, require_root, test_subnet_v4, test_subnet_v6};
use serde_json::{Value, json};

/// A lab link: `a` (the container, CNI_NETNS) eth1 <-> `b` eth2, static addresses on both.
fn static_conf(version: &str, b: &TestNetns) -> (Value, [IpAddr; 4]) {
    let (v4, v6) = (test_subnet_v4(), test_subnet_v6());
    let ips = [nth_v4(v4, 1), nth_v4(v4, 2), nth_v6(v6, 1), nth_v6(v6, 2)];
    let conf = json!({
        "cniVersion": version, "name": "lab", "type": "veth", "mtu": 9000,
        "addresses": [format!("{}/30", ips[0]), format!("{}/64", ips[2])],
        "peer": {"netns": b.path(), "ifname": "eth2",
                 "addresses": [format!("{}/30", ips[1]), format!("{}/64", ips[3])]},
    });
    (conf, ips)
}

#[test]
fn link_between_two_containers_passes_traffic() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let b = TestNetns::with_tag("b").unwrap();
    let (conf, ips) = static_conf("1.1.0", &b);
    let result = call(&env.host, "ADD", "a", Some(env.ctr.path()), "eth1", &conf).expect_success();

    // [peer end, container end], each with its sandbox and addresses.
    assert_eq!(result["interfaces"][0]["name"], "eth2");
    assert_eq!(
        result["interfaces"][0]["sandbox"],
        b.path().display().to_string()
    );
    assert_eq!(result["interfaces"][1]["name"], "eth1");
    assert_eq!(
        result["interfaces"][1]["sandbox"],
        env.ctr.path().display().to_string()
    );
    assert_eq!(result["interfaces"][1]["mtu"], 9000);
    let on = |i: u64| -> Vec<String> {
        result["ips"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|ip| ip["interface"] == i)
            .map(|ip| ip["address"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(on(1), [format!("{}/30", ips[0]), format!("{}/64", ips[2])]);
    assert!(
        on(0).is_empty(),
        "the peer's addresses are configuration, not results"
    );

    for (here, there) in [(0, 1), (2, 3)] {
        assert!(ping(&env.ctr, ips[there]), "a -> b {}", ips[there]);
        assert!(ping(&b, ips[here]), "b -> a {}", ips[here]);
    }
    assert!(
        ping_sized(&env.ctr, ips[1], 8972),
        "jumbo frames over the link"
    );
    // Nothing happened in the host.
    assert_eq!(links(env.host.netlink()), Vec::<String>::new());

    let prev = with_prev(&conf, &result);
    call(&env.host, "CHECK", "a", Some(env.ctr.path()), "eth1", &prev).expect_success();
    b.ip(&["link", "set", "eth2", "down"]).unwrap();
    let out = call(&env.host, "CHECK", "a", Some(env.ctr.path()), "eth1", &prev);
    assert!(error_text(&out).contains("interface eth2 in"), "{out:?}");
    assert!(error_text(&out).contains("is down"), "{out:?}");

    call(&env.host, "DEL", "a", Some(env.ctr.path()), "eth1", &prev).expect_success();
    assert_eq!(links(env.ctr.netlink()), Vec::<String>::new());
    assert_eq!(links(b.netlink()), Vec::<String>::new());
    call(&env.host, "DEL", "a", Some(env.ctr.path()), "eth1", &prev).expect_success();
}

#[test]
fn container_end_from_ipam_peer_static() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let b = TestNetns::with_tag("b").unwrap();
    let v4 = test_subnet_v4();
    // host-local hands out .2 with gateway .1, which the peer holds: the container's default
    // route goes over the link.
    let conf = json!({"cniVersion": "1.0.0", "name": "labipam", "type": "veth",
        "ipam": ipam(&env.data_dir(), v4, None),
        "peer": {"netns": b.path(), "addresses": [format!("{}/24", nth_v4(v4, 1))]}});
    let result = call(&env.host, "ADD", "a", Some(env.ctr.path()), "eth0", &conf).expect_success();
    assert_eq!(
        result["interfaces"][0]["name"], "eth0",
        "peer.ifname defaults to CNI_IFNAME"
    );
    assert_eq!(result["ips"][0]["address"], format!("{}/24", nth_v4(v4, 2)));
    assert_eq!(result["ips"][0]["interface"], 1);
    assert_eq!(result["routes"], json!([{"dst": "0.0.0.0/0"}]));
    let default = env.ctr.ip(&["route", "show", "default"]).unwrap();
    assert!(
        default.contains(&format!("via {} dev eth0", nth_v4(v4, 1))),
        "{default}"
    );
    assert!(ping(&env.ctr, nth_v4(v4, 1)));
    assert!(ping(&b, nth_v4(v4, 2)));

    let prev = with_prev(&conf, &result);
    call(&env.host, "CHECK", "a", Some(env.ctr.path()), "eth0", &prev).expect_success();
    call(&env.host, "DEL", "a", Some(env.ctr.path()), "eth0", &prev).expect_success();
    assert_clean(&env.host, &[&env.ctr, &b], &env.data_dir());
}

/// The container's namespace file is gone but the namespace lives on (something holds it):
/// DEL finds the pair from the peer's side, by its mark; a link there that merely has the same
/// name is left alone.
#[test]
fn del_when_only_the_peer_netns_remains() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let a = TestNetns::with_tag("a").unwrap();
    let b = TestNetns::with_tag("b").unwrap();
    let (conf, _) = static_conf("1.0.0", &b);
    let path = a.path().to_path_buf();
    call(&env.host, "ADD", "a", Some(&path), "eth1", &conf).expect_success();
    let holder = a.netns().try_clone().unwrap();
    drop(a);
    assert!(!path.exists());
    assert_eq!(links(b.netlink()), ["eth2"]);
    call(&env.host, "DEL", "a", Some(&path), "eth1", &conf).expect_success();
    assert_eq!(links(b.netlink()), Vec::<String>::new());
    drop(holder);

    b.ip(&[
        "link", "add", "eth2", "type", "veth", "peer", "name", "other0",
    ])
    .unwrap();
    call(&env.host, "DEL", "a", Some(&path), "eth1", &conf).expect_success();
    let mut left = links(b.netlink());
    left.sort();
    assert_eq!(
        left,
        ["eth2", "other0"],
        "DEL deleted a link that is not ours"
    );
}

#[test]
fn peer_netns_errors() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let own = json!({"cniVersion": "1.0.0", "name": "lab", "type": "veth",
        "peer": {"netns": env.ctr.path()}});
    let out = call(&env.host, "ADD", "a", Some(env.ctr.path()), "eth1", &own);
    assert_eq!(error_code(&out), 7);
    assert!(
        error_text(&out).contains("container's own namespace"),
        "{out:?}"
    );
    let missing = json!({"cniVersion": "1.0.0", "name": "lab", "type": "veth",
        "peer": {"netns": "/run/netns/bt-no-such-peer"}});
    let out = call(
        &env.host,
        "ADD",
        "a",
        Some(env.ctr.path()),
        "eth1",
        &missing,
    );
    assert_eq!(error_code(&out), 7);
    assert!(error_text(&out).contains("peer.netns"), "{out:?}");
    // DEL with the peer gone too is done.
    call(
        &env.host,
        "DEL",
        "a",
        Some(env.ctr.path()),
        "eth1",
        &missing,
    )
    .expect_success();
    assert_eq!(links(env.ctr.netlink()), Vec::<String>::new());
}
