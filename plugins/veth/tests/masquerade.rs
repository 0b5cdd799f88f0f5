//! `ipMasq`: a third namespace plays the internet. It has a route back to the host's uplink
//! only, not to the containers' subnet, so it can answer a container only when the host
//! masquerades the container's traffic.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use berth_netlink::{AddrOptions, VethPair};
use common::*;
use netns_fixtures::{HostAndContainer, TestNetns, require_root, test_subnet_v4, test_subnet_v6};
use serde_json::json;

struct Internet {
    /// Held for its lifetime: dropping it removes the namespace.
    _ns: TestNetns,
    v4: std::net::IpAddr,
    v6: std::net::IpAddr,
}

/// `uplink` in the host <-> `eth0` in the internet namespace, dual stack, no routes back.
fn internet(host: &TestNetns) -> Internet {
    let ns = TestNetns::with_tag("i").unwrap();
    let (v4, v6) = (test_subnet_v4(), test_subnet_v6());
    let pair = VethPair {
        peer_netns: Some(ns.netns()),
        ..VethPair::new("uplink", "eth0")
    };
    let up = host.netlink().add_veth_pair(&pair).unwrap();
    let far = ns.netlink().link_by_name("eth0").unwrap().unwrap();
    let nodad = AddrOptions { nodad: true };
    for (nl, index, n) in [(host.netlink(), up.index, 1), (ns.netlink(), far.index, 2)] {
        nl.add_addr(index, format!("{}/24", nth_v4(v4, n)).parse().unwrap())
            .unwrap();
        nl.add_addr_with(
            index,
            format!("{}/64", nth_v6(v6, u128::from(n))).parse().unwrap(),
            nodad,
        )
        .unwrap();
        nl.set_up(index).unwrap();
    }
    Internet {
        v4: nth_v4(v4, 2),
        v6: nth_v6(v6, 2),
        _ns: ns,
    }
}

#[test]
fn masquerade_lets_containers_reach_the_internet() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let net = internet(&env.host);
    let (v4, v6) = (test_subnet_v4(), test_subnet_v6());
    let plain = host_conf("1.1.0", "masqnet", ipam(&env.data_dir(), v4, Some(v6)));

    // Without ipMasq the echo requests arrive, but the replies have no way back.
    call(&env.host, "ADD", "c0", Some(env.ctr.path()), "eth0", &plain).expect_success();
    assert!(
        !ping(&env.ctr, net.v4),
        "reached the internet without masquerading"
    );
    call(&env.host, "DEL", "c0", Some(env.ctr.path()), "eth0", &plain).expect_success();

    for backend in [None, Some("nftables")] {
        let mut conf = plain.clone();
        conf["ipMasq"] = json!(true);
        if let Some(b) = backend {
            conf["ipMasqBackend"] = json!(b);
        }
        let result = call_ctr(&env, "ADD", &conf).expect_success();
        assert!(
            ping(&env.ctr, net.v4),
            "{backend:?}: v4 through the masquerade"
        );
        assert!(
            ping(&env.ctr, net.v6),
            "{backend:?}: v6 through the masquerade"
        );
        assert!(!masquerade_rules(&env.host).is_empty());
        let prev = with_prev(&conf, &result);
        call_ctr(&env, "CHECK", &prev).expect_success();

        // CHECK notices rules gone; DEL does not mind.
        env.host
            .output(std::process::Command::new("nft").args(["flush", "ruleset"]))
            .unwrap();
        let out = call_ctr(&env, "CHECK", &prev);
        assert!(error_text(&out).contains("ipMasq"), "{backend:?}: {out:?}");
        call_ctr(&env, "DEL", &prev).expect_success();
        assert!(!ping(&env.ctr, net.v4));
    }
    call_ctr(&env, "DEL", &plain).expect_success();
    assert_eq!(masquerade_rules(&env.host), Vec::<String>::new());
    assert_eq!(links(env.host.netlink()), ["uplink"]);
    assert_eq!(links(env.ctr.netlink()), Vec::<String>::new());
}

#[test]
fn del_removes_rules_and_gc_removes_stale_ones() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let c2 = TestNetns::with_tag("c2").unwrap();
    let mut conf = host_conf(
        "1.1.0",
        "masqgc",
        ipam(&env.data_dir(), test_subnet_v4(), None),
    );
    conf["ipMasq"] = json!(true);
    call_ctr(&env, "ADD", &conf).expect_success();
    call(&env.host, "ADD", "c2", Some(c2.path()), "eth0", &conf).expect_success();
    assert!(!masquerade_rules(&env.host).is_empty());

    // GC keeps c1's rules and IPAM reservation, drops c2's.
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
    netns_fixtures::CniCall::new(veth())
        .command("GC")
        .path(&[&plugin_dir()])
        .stdin_json(&gc)
        .run_in(&env.host)
        .unwrap()
        .expect_success();
    // The default backend is iptables here: its comments show in iptables-save.
    let ruleset = String::from_utf8_lossy(
        &env.host
            .output(std::process::Command::new("iptables-save").args(["-t", "nat"]))
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(ruleset.contains("masqgc c1 eth0"), "{ruleset}");
    assert!(!ruleset.contains("masqgc c2 eth0"), "{ruleset}");

    call_ctr(&env, "DEL", &conf).expect_success();
    call(&env.host, "DEL", "c2", Some(c2.path()), "eth0", &conf).expect_success();
    assert_clean(&env.host, &[&env.ctr, &c2], &env.data_dir());
}
