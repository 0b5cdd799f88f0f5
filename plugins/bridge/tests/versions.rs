//! ADD, CHECK and DEL in every CNI version: the result's shape, CHECK noticing what was
//! removed by hand, DEL twice, DEL after the namespace vanished, nothing left afterwards.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use common::*;
use netns_fixtures::{HostAndContainer, require_root, test_subnet_v4};
use serde_json::{Value, json};

fn assert_shape(version: &str, r: &Value, env: &HostAndContainer, bridge: &str) {
    assert_eq!(r["cniVersion"], version);
    let ifaces = r["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 3, "{r}");
    assert_eq!(ifaces[0]["name"], bridge);
    assert!(ifaces[0].get("sandbox").is_none());
    assert!(ifaces[1]["name"].as_str().unwrap().starts_with("veth"));
    assert!(ifaces[1].get("sandbox").is_none());
    assert_eq!(ifaces[2]["name"], "eth0");
    assert_eq!(ifaces[2]["sandbox"], env.ctr.path().to_str().unwrap());
    for iface in ifaces {
        assert_eq!(iface["mac"].as_str().unwrap().len(), 17, "{iface}");
    }
    assert_eq!(ifaces[2].get("mtu").is_some(), version == "1.1.0", "{r}");
    let ips = r["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 1);
    assert_eq!(ips[0]["interface"], 2);
    assert_eq!(ips[0].get("version").is_some(), version < "1.0.0", "{r}");
    if version < "1.0.0" {
        assert_eq!(ips[0]["version"], "4");
    }
    assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
}

fn check(env: &HostAndContainer, conf: &Value) -> netns_fixtures::PluginOutput {
    call_in(&env.host, env.ctr.path(), "CHECK", "ctr-v", conf)
}

#[test]
fn add_check_del_in_every_version() {
    require_root();
    for version in VERSIONS {
        let env = HostAndContainer::new().unwrap();
        let br = bridge_name();
        let conf = conf(
            version,
            &br,
            ipam_v4(test_subnet_v4(), &env.data_dir()),
            json!({"isDefaultGateway": true}),
        );
        let r = call_in(&env.host, env.ctr.path(), "ADD", "ctr-v", &conf).expect_success();
        assert_shape(version, &r, &env, &br);
        let addr = r["ips"][0]["address"].as_str().unwrap().to_owned();
        let gw = r["ips"][0]["gateway"].as_str().unwrap().to_owned();
        assert!(ping(&env.ctr, &gw), "{version}: gateway unreachable");
        let full = with_prev(&conf, &r);

        if version >= "0.4.0" {
            check(&env, &full).expect_success();
            // A route removed by hand is reported, by name.
            env.ctr.ip(&["route", "del", "default"]).unwrap();
            let out = check(&env, &full);
            assert!(
                !out.success(),
                "{version}: CHECK passed without the default route"
            );
            let msg = out.json().unwrap()["msg"].as_str().unwrap().to_owned();
            assert!(
                msg.contains("route 0.0.0.0/0 via") && msg.contains("missing"),
                "{msg}"
            );
            // So is an address (its subnet route goes with it, and the default route is still
            // missing: both findings in one answer).
            env.ctr.ip(&["addr", "del", &addr, "dev", "eth0"]).unwrap();
            let out = check(&env, &full);
            let msg = out.json().unwrap()["msg"].as_str().unwrap().to_owned();
            assert!(msg.contains(&format!("address {addr} is missing")), "{msg}");
            assert!(msg.contains("route 0.0.0.0/0"), "{msg}");
            // And the gateway on the bridge.
            let gw_net = format!("{gw}/{}", addr.split('/').nth(1).unwrap());
            env.host.ip(&["addr", "del", &gw_net, "dev", &br]).unwrap();
            let msg = check(&env, &full).json().unwrap()["msg"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(
                msg.contains(&format!("gateway address {gw_net} is missing from {br}")),
                "{msg}"
            );
        } else {
            // CHECK does not exist before 0.4.0.
            assert_eq!(check(&env, &full).json().unwrap()["code"], 1);
        }

        for _ in 0..2 {
            assert_eq!(
                call_in(&env.host, env.ctr.path(), "DEL", "ctr-v", &full).expect_success(),
                Value::Null
            );
        }
        assert!(
            veths(env.host.netlink()).is_empty(),
            "{version}: host veth left"
        );
        assert!(
            veths(env.ctr.netlink()).is_empty(),
            "{version}: container veth left"
        );
        assert!(reservations(&env.data_dir()).is_empty(), "{version}");
        if version >= "0.4.0" {
            let out = check(&env, &full);
            assert!(!out.success(), "{version}: CHECK passed after DEL");
        }
    }
}

#[test]
fn check_notices_a_detached_veth_and_a_changed_mtu() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let br = bridge_name();
    let conf = conf(
        "1.1.0",
        &br,
        ipam_v4(test_subnet_v4(), &env.data_dir()),
        json!({"mtu": 1300, "hairpinMode": true}),
    );
    let r = call_in(&env.host, env.ctr.path(), "ADD", "ctr-v", &conf).expect_success();
    let full = with_prev(&conf, &r);
    check(&env, &full).expect_success();
    let veth = r["interfaces"][1]["name"].as_str().unwrap();
    env.host.ip(&["link", "set", veth, "nomaster"]).unwrap();
    env.ctr.ip(&["link", "set", "eth0", "mtu", "1280"]).unwrap();
    let msg = check(&env, &full).json().unwrap()["msg"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        msg.contains(&format!("host veth {veth} is not attached to bridge {br}")),
        "{msg}"
    );
    assert!(msg.contains("eth0 has MTU 1280, expected 1300"), "{msg}");
    call_in(&env.host, env.ctr.path(), "DEL", "ctr-v", &full).expect_success();
}

#[test]
fn del_with_a_vanished_netns_releases_everything() {
    require_root();
    for version in VERSIONS {
        let env = HostAndContainer::new().unwrap();
        let conf = conf(
            version,
            &bridge_name(),
            ipam_v4(test_subnet_v4(), &env.data_dir()),
            json!({"isGateway": true}),
        );
        let r = call_in(&env.host, env.ctr.path(), "ADD", "ctr-gone", &conf).expect_success();
        assert_eq!(reservations(&env.data_dir()).len(), 1);
        let path = env.ctr.path().to_path_buf();
        let HostAndContainer { host, ctr, tmp } = env;
        drop(ctr);
        assert!(!path.exists());
        let full = with_prev(&conf, &r);
        call_in(&host, &path, "DEL", "ctr-gone", &full).expect_success();
        // The veth died with the namespace; the reservation went with DEL.
        assert!(veths(host.netlink()).is_empty(), "{version}");
        assert!(
            reservations(&tmp.path().join("data")).is_empty(),
            "{version}"
        );
        // Without CNI_NETNS at all, DEL still succeeds.
        let out = netns_fixtures::CniCall::new(plugin())
            .command("DEL")
            .container_id("ctr-gone")
            .ifname("eth0")
            .path(&[&ipam_dir()])
            .stdin_json(&full)
            .run_in(&host)
            .unwrap();
        out.expect_success();
    }
}
