//! The bridge binary, exec'd the way a runtime does, inside throwaway namespaces: real traffic
//! between containers, the gateway, and a namespace playing the internet; the options.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use common::*;
use netns_fixtures::{HostAndContainer, TestNetns, require_root, test_subnet_v4, test_subnet_v6};
use serde_json::{Value, json};

#[test]
fn two_containers_ping_each_other_and_the_gateway_dual_stack() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let c2 = TestNetns::with_tag("c2").unwrap();
    let (v4, v6) = (test_subnet_v4(), test_subnet_v6());
    let br = bridge_name();
    let ipam = json!({"type": "host-local", "dataDir": env.data_dir(),
        "ranges": [[{"subnet": v4.to_string()}], [{"subnet": v6.to_string()}]]});
    let conf = conf(
        "1.1.0",
        &br,
        ipam,
        json!({"isGateway": true, "hairpinMode": true, "mtu": 1400}),
    );
    let r1 = call_in(&env.host, env.ctr.path(), "ADD", "ctr-1", &conf).expect_success();
    let r2 = call_in(&env.host, c2.path(), "ADD", "ctr-2", &conf).expect_success();

    // Addresses of both families, bound to the container interface.
    assert_eq!(result_addrs(&r1).len(), 2, "{r1}");
    let gw4 = v4.iter().nth(1).unwrap().to_string();
    let gw6 = format!("{}1", v6.network());
    assert_eq!(r1["ips"][0]["gateway"], gw4.as_str());
    assert_eq!(r1["ips"][1]["gateway"], gw6.as_str());

    assert!(ping(&env.ctr, &gw4), "IPv4 gateway");
    // No DAD by default: the IPv6 gateway answers at the first attempt.
    assert!(ping_once(&env.ctr, &gw6), "IPv6 gateway");
    for (from, to) in [(&env.ctr, &r2), (&c2, &r1)] {
        assert!(ping(from, &ip_of(to, 0)), "IPv4 container to container");
        assert!(ping(from, &ip_of(to, 1)), "IPv6 container to container");
    }

    // MTU on both ends (and on the bridge this call created); hairpin on the port.
    let host_veth = r1["interfaces"][1]["name"].as_str().unwrap();
    let port = link(env.host.netlink(), host_veth);
    assert_eq!(port.mtu, 1400);
    assert!(port.bridge_port.unwrap().hairpin, "hairpin mode not set");
    assert_eq!(link(env.ctr.netlink(), "eth0").mtu, 1400);
    assert_eq!(r1["interfaces"][2]["mtu"], 1400);
    assert_eq!(link(env.host.netlink(), &br).mtu, 1400);

    // Forwarding turned on in the host namespace for both families.
    let fwd = env
        .host
        .run(|| {
            (
                berth_netlink::sysctl::read("net/ipv4/ip_forward").unwrap(),
                berth_netlink::sysctl::read("net/ipv6/conf/all/forwarding").unwrap(),
            )
        })
        .unwrap();
    assert_eq!(fwd, ("1".to_owned(), "1".to_owned()));
    // The port itself has no IPv6 (nothing for it to flood), the container interface has.
    let port_v6_off = env
        .host
        .run(|| {
            berth_netlink::sysctl::read(&format!("net/ipv6/conf/{host_veth}/disable_ipv6")).unwrap()
        })
        .unwrap();
    assert_eq!(port_v6_off, "1");
    let ctr_v6_off = env
        .ctr
        .run(|| berth_netlink::sysctl::read("net/ipv6/conf/eth0/disable_ipv6").unwrap())
        .unwrap();
    assert_eq!(ctr_v6_off, "0", "a dual-stack container needs IPv6");

    for (ns, id, r) in [(&env.ctr, "ctr-1", &r1), (&c2, "ctr-2", &r2)] {
        call_in(&env.host, ns.path(), "DEL", id, &with_prev(&conf, r)).expect_success();
    }
    assert!(veths(env.host.netlink()).is_empty());
    assert!(reservations(&env.data_dir()).is_empty());
}

#[test]
fn container_mac_from_runtime_config_args_and_cni_args() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let br = bridge_name();
    let base = conf(
        "1.0.0",
        &br,
        ipam_v4(test_subnet_v4(), &env.data_dir()),
        json!({}),
    );
    let cases: [(Value, &str, &str); 3] = [
        (
            json!({"runtimeConfig": {"mac": "02:42:00:00:00:01"}}),
            "IgnoreUnknown=1;MAC=02:42:00:00:00:09",
            "02:42:00:00:00:01",
        ),
        (
            json!({"args": {"cni": {"mac": "02:42:00:00:00:02"}}}),
            "IgnoreUnknown=1;MAC=02:42:00:00:00:09",
            "02:42:00:00:00:02",
        ),
        (
            json!({}),
            "IgnoreUnknown=1;MAC=02:42:00:00:00:03",
            "02:42:00:00:00:03",
        ),
    ];
    for (extra, cni_args, want) in cases {
        let mut conf = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let out = call_with(
            plugin(),
            &env.host,
            env.ctr.path(),
            "ADD",
            "ctr-mac",
            &conf,
            cni_args,
        );
        let result = out.expect_success();
        assert_eq!(result["interfaces"][2]["mac"], want);
        let mac = link(env.ctr.netlink(), "eth0").mac.unwrap();
        assert_eq!(berth_netlink::format_mac(&mac), want);
        call_with(
            plugin(),
            &env.host,
            env.ctr.path(),
            "DEL",
            "ctr-mac",
            &with_prev(&conf, &result),
            cni_args,
        )
        .expect_success();
    }
}

#[test]
fn port_isolation_keeps_containers_apart_but_not_from_the_gateway() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let c2 = TestNetns::with_tag("c2").unwrap();
    let subnet = test_subnet_v4();
    let conf = conf(
        "1.0.0",
        &bridge_name(),
        ipam_v4(subnet, &env.data_dir()),
        json!({"isGateway": true, "portIsolation": true}),
    );
    let r1 = call_in(&env.host, env.ctr.path(), "ADD", "iso-1", &conf).expect_success();
    let r2 = call_in(&env.host, c2.path(), "ADD", "iso-2", &conf).expect_success();
    let port = link(
        env.host.netlink(),
        r1["interfaces"][1]["name"].as_str().unwrap(),
    );
    assert!(port.bridge_port.unwrap().isolated);
    // IPv4 only: no IPv6 on the container interface (nothing for the bridge to flood).
    let v6_off = env
        .ctr
        .run(|| berth_netlink::sysctl::read("net/ipv6/conf/eth0/disable_ipv6").unwrap())
        .unwrap();
    assert_eq!(v6_off, "1");
    let gw = subnet.iter().nth(1).unwrap().to_string();
    assert!(ping(&env.ctr, &gw), "isolated port reaches the bridge");
    assert!(
        !ping_once(&env.ctr, &ip_of(&r2, 0)),
        "isolated ports reached each other"
    );
}

#[test]
fn disable_container_interface_leaves_it_down_and_refuses_ipam() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let br = bridge_name();
    let mut l2 = conf(
        "1.0.0",
        &br,
        Value::Null,
        json!({"disableContainerInterface": true}),
    );
    l2.as_object_mut().unwrap().remove("ipam");
    let result = call_in(&env.host, env.ctr.path(), "ADD", "l2", &l2).expect_success();
    assert!(result.get("ips").is_none(), "{result}");
    assert_eq!(result["interfaces"].as_array().unwrap().len(), 3);
    assert!(
        !link(env.ctr.netlink(), "eth0").up,
        "container interface is up"
    );
    call_in(
        &env.host,
        env.ctr.path(),
        "CHECK",
        "l2",
        &with_prev(&l2, &result),
    )
    .expect_success();
    call_in(&env.host, env.ctr.path(), "DEL", "l2", &l2).expect_success();

    let with_ipam = conf(
        "1.0.0",
        &br,
        ipam_v4(test_subnet_v4(), &env.data_dir()),
        json!({"disableContainerInterface": true}),
    );
    let out = call_in(&env.host, env.ctr.path(), "ADD", "l2b", &with_ipam);
    let err = out.json().unwrap();
    assert_eq!(err["code"], 7, "{out:?}");
    let msg = err["msg"].as_str().unwrap();
    assert!(
        msg.contains("ipam") && msg.contains("disableContainerInterface"),
        "{msg}"
    );
}

/// `macspoofchk`: a container that forges its source MAC is cut off at its bridge port (its
/// neighbour stays reachable once it uses its own MAC again); CHECK sees the guard; DEL
/// removes it.
#[test]
fn macspoofchk_drops_frames_with_a_forged_source_mac() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let c2 = TestNetns::with_tag("c2").unwrap();
    let conf = conf(
        "1.1.0",
        &bridge_name(),
        ipam_v4(test_subnet_v4(), &env.data_dir()),
        json!({"macspoofchk": true}),
    );
    let net = conf["name"].as_str().unwrap().to_owned();
    let r1 = call_in(&env.host, env.ctr.path(), "ADD", "spoof-1", &conf).expect_success();
    let r2 = call_in(&env.host, c2.path(), "ADD", "spoof-2", &conf).expect_success();
    let (ip1, ip2) = (ip_of(&r1, 0), ip_of(&r2, 0));
    assert!(ping(&env.ctr, &ip2), "guarded containers reach each other");
    call_in(
        &env.host,
        env.ctr.path(),
        "CHECK",
        "spoof-1",
        &with_prev(&conf, &r1),
    )
    .expect_success();

    // Forge: the same interface, another MAC. Both directions die (c2's replies need ARP
    // answers that carry the forged MAC).
    let eth0 = link(env.ctr.netlink(), "eth0");
    let own_mac = eth0.mac.unwrap();
    env.ctr
        .netlink()
        .set_mac(eth0.index, [0x02, 0xba, 0xd0, 0, 0, 0x01])
        .unwrap();
    let flush = |ns: &TestNetns| {
        let out = ns
            .output(std::process::Command::new("ip").args(["neigh", "flush", "all"]))
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    flush(&env.ctr);
    flush(&c2);
    assert!(
        !ping_once(&env.ctr, &ip2),
        "forged frames passed the bridge"
    );
    assert!(!ping_once(&c2, &ip1), "the forged container answered");

    // Its own MAC again: traffic flows, so it was the MAC that was dropped.
    env.ctr.netlink().set_mac(eth0.index, own_mac).unwrap();
    flush(&env.ctr);
    flush(&c2);
    assert!(ping(&env.ctr, &ip2), "own MAC blocked");
    assert!(ping(&c2, &ip1), "own MAC blocked");

    // CHECK notices a guard that was removed behind the plugin's back.
    let port = r1["interfaces"][1]["name"].as_str().unwrap();
    let removed = env
        .host
        .output(std::process::Command::new("nft").args([
            "delete",
            "element",
            "bridge",
            "berth-macspoof",
            "guarded",
            &format!("{{ \"{port}\" }}"),
        ]))
        .unwrap();
    assert!(removed.status.success(), "{removed:?}");
    let out = call_in(
        &env.host,
        env.ctr.path(),
        "CHECK",
        "spoof-1",
        &with_prev(&conf, &r1),
    );
    let err = out.json().unwrap();
    assert!(
        err["msg"].as_str().unwrap().contains("macspoofchk")
            || err["details"]
                .as_str()
                .unwrap_or("")
                .contains("macspoofchk"),
        "{out:?}"
    );

    for (ns, id, r) in [(&env.ctr, "spoof-1", &r1), (&c2, "spoof-2", &r2)] {
        call_in(&env.host, ns.path(), "DEL", id, &with_prev(&conf, r)).expect_success();
        // Idempotent.
        call_in(&env.host, ns.path(), "DEL", id, &with_prev(&conf, r)).expect_success();
    }
    let rules = ruleset(&env.host);
    assert!(
        !rules.contains(&format!("berth {net} ")),
        "guards left:\n{rules}"
    );
    assert!(veths(env.host.netlink()).is_empty());
}

#[test]
fn invalid_option_combinations_are_refused_before_touching_anything() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let br = bridge_name();
    let ipam = ipam_v4(test_subnet_v4(), &env.data_dir());
    let cases = [
        (
            json!({"hairpinMode": true, "promiscMode": true}),
            7,
            vec!["hairpinMode", "promiscMode"],
        ),
        (json!({"vlan": 5000}), 7, vec!["VLAN ID 5000"]),
    ];
    for (extra, code, needles) in cases {
        let out = call_in(
            &env.host,
            env.ctr.path(),
            "ADD",
            "bad",
            &conf("1.0.0", &br, ipam.clone(), extra),
        );
        assert!(!out.success());
        let err = out.json().unwrap();
        assert_eq!(err["code"], code, "{out:?}");
        for needle in needles {
            assert!(err["msg"].as_str().unwrap().contains(needle), "{out:?}");
        }
    }
    assert!(env.host.netlink().link_by_name(&br).unwrap().is_none());
    assert!(veths(env.host.netlink()).is_empty());
    assert!(reservations(&env.data_dir()).is_empty());
}

/// Whether the kernel of `ns` can filter VLANs on a bridge (this one cannot: no
/// CONFIG_BRIDGE_VLAN_FILTERING, no 8021q).
fn kernel_has_vlan_filtering(ns: &TestNetns) -> bool {
    let probe = bridge_name();
    let out = ns
        .output(std::process::Command::new("ip").args([
            "link",
            "add",
            &probe,
            "type",
            "bridge",
            "vlan_filtering",
            "1",
        ]))
        .unwrap();
    if out.status.success() {
        let del = ns
            .output(std::process::Command::new("ip").args(["link", "del", &probe]))
            .unwrap();
        assert!(del.status.success(), "{del:?}");
    }
    out.status.success()
}

/// VLANs: with kernel support, two containers on VLAN 10 reach each other and one on VLAN 20
/// reaches neither. Without it (this machine), `vlan` and `vlanTrunk` fail with a clear
/// error (code 2, naming the key) and leave nothing behind.
#[test]
fn vlan_options_separate_containers_or_fail_clearly_without_kernel_support() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    if kernel_has_vlan_filtering(&env.host) {
        let (c2, c3) = (
            TestNetns::with_tag("c2").unwrap(),
            TestNetns::with_tag("c3").unwrap(),
        );
        let br = bridge_name();
        let ipam = ipam_v4(test_subnet_v4(), &env.data_dir());
        let on = |vid: u16| conf("1.0.0", &br, ipam.clone(), json!({"vlan": vid}));
        let r1 = call_in(&env.host, env.ctr.path(), "ADD", "v10-a", &on(10)).expect_success();
        let r2 = call_in(&env.host, c2.path(), "ADD", "v10-b", &on(10)).expect_success();
        let r3 = call_in(&env.host, c3.path(), "ADD", "v20", &on(20)).expect_success();
        assert!(ping(&env.ctr, &ip_of(&r2, 0)), "same VLAN");
        assert!(!ping_once(&c3, &ip_of(&r1, 0)), "VLAN 20 reached VLAN 10");
        assert!(!ping_once(&c3, &ip_of(&r2, 0)), "VLAN 20 reached VLAN 10");
        for (ns, id, r, vid) in [
            (&env.ctr, "v10-a", &r1, 10),
            (&c2, "v10-b", &r2, 10),
            (&c3, "v20", &r3, 20),
        ] {
            call_in(&env.host, ns.path(), "DEL", id, &with_prev(&on(vid), r)).expect_success();
        }
        assert!(veths(env.host.netlink()).is_empty());
        assert!(reservations(&env.data_dir()).is_empty());
        return;
    }
    for (extra, key) in [
        (json!({"vlan": 10}), "vlan=10"),
        (
            json!({"vlanTrunk": [{"minID": 20, "maxID": 21}], "preserveDefaultVlan": false}),
            "vlanTrunk=[20, 21]",
        ),
    ] {
        let br = bridge_name();
        let conf = conf(
            "1.0.0",
            &br,
            ipam_v4(test_subnet_v4(), &env.data_dir()),
            extra,
        );
        let out = call_in(&env.host, env.ctr.path(), "ADD", "vlan", &conf);
        assert!(!out.success(), "{out:?}");
        let err = out.json().unwrap();
        assert_eq!(err["code"], 2, "{out:?}");
        let msg = err["msg"].as_str().unwrap();
        assert!(msg.contains(key) && msg.contains("VLAN filtering"), "{msg}");
        assert!(veths(env.host.netlink()).is_empty());
        assert!(veths(env.ctr.netlink()).is_empty());
        assert!(reservations(&env.data_dir()).is_empty());
    }
}

/// A third namespace plays the internet: connected to the host namespace by a veth, with no
/// route back to the container subnet. Only masquerading lets the container reach it.
#[test]
fn ip_masq_lets_the_container_reach_the_internet_and_not_without() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let inet = TestNetns::with_tag("i").unwrap();
    let uplink = test_subnet_v4();
    let host_ip = uplink.iter().nth(1).unwrap();
    let inet_ip = uplink.iter().nth(2).unwrap();
    let (h, i) = (
        netns_fixtures::unique_name("u"),
        netns_fixtures::unique_name("u"),
    );
    let pair = berth_netlink::VethPair {
        peer_netns: Some(inet.netns()),
        ..berth_netlink::VethPair::new(&h, &i)
    };
    let host_end = env.host.netlink().add_veth_pair(&pair).unwrap();
    env.host.netlink().set_up(host_end.index).unwrap();
    let inet_end = link(inet.netlink(), &i);
    inet.netlink().set_up(inet_end.index).unwrap();
    let prefix = uplink.prefix();
    env.host
        .netlink()
        .add_addr(
            host_end.index,
            ipnetwork::IpNetwork::new(host_ip.into(), prefix).unwrap(),
        )
        .unwrap();
    inet.netlink()
        .add_addr(
            inet_end.index,
            ipnetwork::IpNetwork::new(inet_ip.into(), prefix).unwrap(),
        )
        .unwrap();
    let target = inet_ip.to_string();

    let (br, subnet) = (bridge_name(), test_subnet_v4());
    for (masq, id) in [(false, "nomasq"), (true, "masq")] {
        let conf = conf(
            "1.0.0",
            &br,
            ipam_v4(subnet, &env.data_dir()),
            json!({"isDefaultGateway": true, "ipMasq": masq}),
        );
        let result = call_in(&env.host, env.ctr.path(), "ADD", id, &conf).expect_success();
        if masq {
            assert!(ping(&env.ctr, &target), "no internet with ipMasq");
            let rules = ruleset(&env.host);
            assert!(
                rules.contains(&ip_of(&result, 0)),
                "no rule for the container:\n{rules}"
            );
            let full = with_prev(&conf, &result);
            call_in(&env.host, env.ctr.path(), "CHECK", id, &full).expect_success();
            // Rules removed behind the plugin's back: CHECK names them.
            let owner = berth_firewall::Owner {
                network: conf["name"].as_str().unwrap().to_owned(),
                container_id: id.to_owned(),
                ifname: "eth0".to_owned(),
            };
            env.host
                .run(|| {
                    berth_firewall::Firewall::detect(None)?
                        .remove(berth_firewall::Removal::Masquerade(&owner))
                })
                .unwrap()
                .unwrap();
            let out = call_in(&env.host, env.ctr.path(), "CHECK", id, &full);
            let msg = out.json().unwrap()["msg"].as_str().unwrap().to_owned();
            assert!(msg.contains("masquerade rules"), "{out:?}");
        } else {
            assert!(
                !ping_once(&env.ctr, &target),
                "internet reached without ipMasq"
            );
        }
        call_in(
            &env.host,
            env.ctr.path(),
            "DEL",
            id,
            &with_prev(&conf, &result),
        )
        .expect_success();
        let rules = ruleset(&env.host);
        assert!(
            !rules.contains(&ip_of(&result, 0)),
            "rules left after DEL:\n{rules}"
        );
    }
}
