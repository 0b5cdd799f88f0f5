//! Host mode (ptp's), through the binary: traffic, every CNI version, CHECK, DEL's leniency.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::process::Command;

use common::*;
use netns_fixtures::{
    CniCall, HostAndContainer, TestNetns, require_root, test_subnet_v4, test_subnet_v6,
};
use serde_json::{Value, json};

#[test]
fn host_and_container_reach_each_other_v4_and_v6() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let (v4, v6) = (test_subnet_v4(), test_subnet_v6());
    let conf = host_conf("1.1.0", "hostnet", ipam(&env.data_dir(), v4, Some(v6)));
    let result = call_ctr(&env, "ADD", &conf).expect_success();

    // ptp's result shape: [host veth, container end], addresses on interface 1.
    let host_name = result["interfaces"][0]["name"].as_str().unwrap();
    assert!(
        host_name.len() == 15
            && host_name.starts_with("veth")
            && host_name[4..].chars().all(|c| c.is_ascii_hexdigit()),
        "{host_name}"
    );
    assert!(result["interfaces"][0].get("sandbox").is_none());
    assert_eq!(result["interfaces"][1]["name"], "eth0");
    assert_eq!(
        result["interfaces"][1]["sandbox"],
        env.ctr.path().display().to_string()
    );
    assert_eq!(result["interfaces"][1]["mtu"], 1500);
    assert_eq!(result["ips"][0]["interface"], 1);
    assert_eq!(result["ips"][1]["interface"], 1);
    assert_eq!(
        result["routes"],
        json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}])
    );
    let ips = result_ips(&result);
    assert_eq!(
        ips,
        [
            format!("{}/24", nth_v4(v4, 2)).parse().unwrap(),
            format!("{}/64", nth_v6(v6, 2)).parse().unwrap()
        ]
    );

    for (gw, ctr) in [(nth_v4(v4, 1), ips[0].ip()), (nth_v6(v6, 1), ips[1].ip())] {
        assert!(ping(&env.ctr, gw), "container -> host {gw}");
        assert!(ping(&env.host, ctr), "host -> container {ctr}");
    }
    let forwarding = |key: &str| {
        env.host
            .run(|| berth_netlink::sysctl::read(key))
            .unwrap()
            .unwrap()
    };
    assert_eq!(forwarding("net/ipv4/ip_forward"), "1");
    assert_eq!(forwarding("net/ipv6/conf/all/forwarding"), "1");

    call_ctr(&env, "DEL", &with_prev(&conf, &result)).expect_success();
    assert_clean(&env.host, &[&env.ctr], &env.data_dir());
}

#[test]
fn containers_on_one_network_reach_each_other_through_the_host() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let c2 = TestNetns::with_tag("c2").unwrap();
    let (v4, v6) = (test_subnet_v4(), test_subnet_v6());
    let conf = host_conf("1.0.0", "shared", ipam(&env.data_dir(), v4, Some(v6)));
    let r1 = call_ctr(&env, "ADD", &conf).expect_success();
    let r2 = call(&env.host, "ADD", "c2", Some(c2.path()), "eth0", &conf).expect_success();
    let (ips1, ips2) = (result_ips(&r1), result_ips(&r2));
    assert_ne!(r1["interfaces"][0]["name"], r2["interfaces"][0]["name"]);
    for i in 0..2 {
        assert!(ping(&env.ctr, ips2[i].ip()), "c1 -> c2 {}", ips2[i]);
        assert!(ping(&c2, ips1[i].ip()), "c2 -> c1 {}", ips1[i]);
    }
    // The path goes through the host: the hop limit/TTL drops by one.
    let out = env
        .ctr
        .output(Command::new("busybox").args(["ping", "-c1", "-W1", &ips2[0].ip().to_string()]))
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ttl=63"),
        "{out:?}"
    );

    call_ctr(&env, "DEL", &conf).expect_success();
    call(&env.host, "DEL", "c2", Some(c2.path()), "eth0", &conf).expect_success();
    assert_clean(&env.host, &[&env.ctr, &c2], &env.data_dir());
}

#[test]
fn mtu_applies_to_both_ends() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let v4 = test_subnet_v4();
    let mut conf = host_conf("1.1.0", "mtunet", ipam(&env.data_dir(), v4, None));
    conf["mtu"] = json!(1400);
    let result = call_ctr(&env, "ADD", &conf).expect_success();
    assert_eq!(result["interfaces"][0]["mtu"], 1400);
    assert_eq!(result["interfaces"][1]["mtu"], 1400);
    let host_name = result["interfaces"][0]["name"].as_str().unwrap();
    assert_eq!(
        env.host
            .netlink()
            .link_by_name(host_name)
            .unwrap()
            .unwrap()
            .mtu,
        1400
    );
    assert_eq!(
        env.ctr.netlink().link_by_name("eth0").unwrap().unwrap().mtu,
        1400
    );
    // 1372 bytes of payload + 8 ICMP + 20 IP = 1400: the largest unfragmented echo.
    assert!(ping_sized(&env.ctr, nth_v4(v4, 1), 1372));
    call_ctr(&env, "CHECK", &with_prev(&conf, &result)).expect_success();

    // A different mtu in the configuration is a CHECK failure.
    let mut other = with_prev(&conf, &result);
    other["mtu"] = json!(1300);
    let out = call_ctr(&env, "CHECK", &other);
    assert!(
        error_text(&out).contains("mtu 1400 instead of 1300"),
        "{out:?}"
    );
    call_ctr(&env, "DEL", &conf).expect_success();
}

#[test]
fn every_version_add_check_del_del() {
    require_root();
    for version in VERSIONS {
        let env = HostAndContainer::new().unwrap();
        let conf = host_conf(
            version,
            "vers",
            ipam(&env.data_dir(), test_subnet_v4(), Some(test_subnet_v6())),
        );
        let result = call_ctr(&env, "ADD", &conf).expect_success();
        assert_eq!(result["cniVersion"], version);
        assert_eq!(result["ips"].as_array().unwrap().len(), 2, "{version}");
        assert_eq!(
            result["ips"][0].get("version").is_some(),
            version < "1.0.0",
            "{version}"
        );
        assert_eq!(
            result["interfaces"][1].get("mtu").is_some(),
            version == "1.1.0",
            "{version}"
        );
        let gw: std::net::IpAddr = result["ips"][0]["gateway"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(ping(&env.ctr, gw), "{version}");

        let prev = with_prev(&conf, &result);
        let check = call_ctr(&env, "CHECK", &prev);
        if version >= "0.4.0" {
            check.expect_success();
        } else {
            assert_eq!(
                error_code(&check),
                1,
                "{version}: CHECK is not in {version}"
            );
        }
        call_ctr(&env, "DEL", &prev).expect_success();
        assert_clean(&env.host, &[&env.ctr], &env.data_dir());
        call_ctr(&env, "DEL", &prev).expect_success();
        if version >= "0.4.0" {
            let out = call_ctr(&env, "CHECK", &prev);
            assert!(!out.success(), "{version}: CHECK passed after DEL");
        }
    }
}

#[test]
fn check_reports_every_problem() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let v4 = test_subnet_v4();
    let conf = host_conf("1.0.0", "checknet", ipam(&env.data_dir(), v4, None));
    let result = call_ctr(&env, "ADD", &conf).expect_success();
    let prev = with_prev(&conf, &result);
    call_ctr(&env, "CHECK", &prev).expect_success();

    env.ctr.ip(&["route", "del", "default"]).unwrap();
    let ctr_ip = result_ips(&result)[0].ip().to_string();
    env.host.ip(&["route", "del", &ctr_ip]).unwrap();
    let out = call_ctr(&env, "CHECK", &prev);
    assert_eq!(error_code(&out), 999);
    let text = error_text(&out);
    assert!(text.contains("2 problems"), "{text}");
    assert!(text.contains("route 0.0.0.0/0 via"), "{text}");
    assert!(
        text.contains(&format!("route {ctr_ip}/32 dev veth")),
        "{text}"
    );

    // Without prevResult there is nothing to check against.
    let out = call_ctr(&env, "CHECK", &conf);
    assert_eq!(error_code(&out), 7);
    call_ctr(&env, "DEL", &prev).expect_success();
    assert_clean(&env.host, &[&env.ctr], &env.data_dir());
}

/// The netns file is gone: either with its namespace (the kernel destroyed the pair), or while
/// something still holds the namespace (the pair lives on and DEL finds the host end by name).
#[test]
fn del_with_a_vanished_netns() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let conf = host_conf(
        "1.0.0",
        "gone",
        ipam(&env.data_dir(), test_subnet_v4(), None),
    );

    let c2 = TestNetns::with_tag("c2").unwrap();
    let path = c2.path().to_path_buf();
    let result = call(&env.host, "ADD", "c2", Some(&path), "eth0", &conf).expect_success();
    let host_name = result["interfaces"][0]["name"].as_str().unwrap().to_owned();
    let holder = c2.netns().try_clone().unwrap();
    drop(c2);
    assert!(!path.exists());
    assert!(
        env.host
            .netlink()
            .link_by_name(&host_name)
            .unwrap()
            .is_some(),
        "the pair lives on"
    );
    call(&env.host, "DEL", "c2", Some(&path), "eth0", &conf).expect_success();
    assert!(
        env.host
            .netlink()
            .link_by_name(&host_name)
            .unwrap()
            .is_none(),
        "host end not deleted"
    );
    drop(holder);

    let c3 = TestNetns::with_tag("c3").unwrap();
    let path = c3.path().to_path_buf();
    call(&env.host, "ADD", "c3", Some(&path), "eth0", &conf).expect_success();
    drop(c3);
    call(&env.host, "DEL", "c3", Some(&path), "eth0", &conf).expect_success();
    // Without CNI_NETNS at all.
    let out = CniCall::new(veth())
        .command("DEL")
        .container_id("c3")
        .ifname("eth0")
        .path(&[&plugin_dir()])
        .stdin_json(&conf)
        .run_in(&env.host)
        .unwrap();
    assert_eq!(out.expect_success(), Value::Null);
    // The kernel destroys a namespace's links asynchronously.
    for _ in 0..100 {
        if links(env.host.netlink()).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_clean(&env.host, &[&env.ctr], &env.data_dir());
}

#[test]
fn add_fails_cleanly_when_the_interface_exists() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    env.ctr
        .ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
        ])
        .unwrap();
    let conf = host_conf(
        "1.0.0",
        "taken",
        ipam(&env.data_dir(), test_subnet_v4(), None),
    );
    let out = call_ctr(&env, "ADD", &conf);
    let text = error_text(&out);
    assert!(
        text.contains(&format!(
            "interface eth0 already exists in {}",
            env.ctr.path().display()
        )),
        "{text}"
    );
    assert_eq!(links(env.host.netlink()), Vec::<String>::new());
    assert!(ipam_files(&env.data_dir()).iter().all(|f| f == "lock"));
}

#[test]
fn invalid_configurations_are_code_7_and_touch_nothing() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let ipam = ipam(&env.data_dir(), test_subnet_v4(), None);
    let peer = json!({"netns": env.ctr.path()});
    let cases = [
        (
            json!({"ipMasq": true, "ipam": ipam.clone(), "peer": peer.clone()}),
            "peer and ipMasq",
        ),
        (
            json!({"addresses": ["198.18.0.1/30"], "ipam": ipam.clone(), "peer": peer.clone()}),
            "addresses and ipam",
        ),
        (
            json!({"addresses": ["198.18.0.1/30"], "ipam": ipam.clone()}),
            "only valid with peer",
        ),
        (json!({}), "ipam is required without peer"),
        (json!({"ipam": ipam.clone(), "mtu": 70000}), "mtu 70000"),
    ];
    for (keys, msg) in cases {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "bad", "type": "veth"});
        for (k, v) in keys.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let out = call_ctr(&env, "ADD", &conf);
        assert_eq!(error_code(&out), 7, "{conf}: {out:?}");
        assert!(error_text(&out).contains(msg), "{conf}: {out:?}");
    }
    assert_clean(&env.host, &[&env.ctr], &env.data_dir());
}

#[test]
fn status_and_gc_delegate_to_ipam() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let c2 = TestNetns::with_tag("c2").unwrap();
    let conf = host_conf(
        "1.1.0",
        "gcnet",
        ipam(&env.data_dir(), test_subnet_v4(), None),
    );
    let r1 = call_ctr(&env, "ADD", &conf).expect_success();
    let r2 = call(&env.host, "ADD", "c2", Some(c2.path()), "eth0", &conf).expect_success();
    let status = |conf: &Value| {
        CniCall::new(veth())
            .command("STATUS")
            .path(&[&plugin_dir()])
            .stdin_json(conf)
            .run_in(&env.host)
            .unwrap()
    };
    assert_eq!(status(&conf).expect_success(), Value::Null);

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
    CniCall::new(veth())
        .command("GC")
        .path(&[&plugin_dir()])
        .stdin_json(&gc)
        .run_in(&env.host)
        .unwrap()
        .expect_success();
    let files = ipam_files(&env.data_dir());
    assert!(
        files.contains(&result_ips(&r1)[0].ip().to_string()),
        "{files:?}"
    );
    assert!(
        !files.contains(&result_ips(&r2)[0].ip().to_string()),
        "{files:?}"
    );

    // STATUS reports the IPAM plugin's trouble: an IPAM type that is not on CNI_PATH.
    let mut broken = conf.clone();
    broken["ipam"]["type"] = json!("no-such-ipam");
    assert_eq!(error_code(&status(&broken)), 8);
    call_ctr(&env, "DEL", &conf).expect_success();
    call(&env.host, "DEL", "c2", Some(c2.path()), "eth0", &conf).expect_success();
    assert_clean(&env.host, &[&env.ctr, &c2], &env.data_dir());
}
