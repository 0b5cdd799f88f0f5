//! The loopback binary, exec'd the way a runtime does, inside throwaway namespaces.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use netns_fixtures::{CniCall, HostAndContainer, PluginOutput, require_root};
use serde_json::{Value, json};

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

fn conf(version: &str) -> Value {
    json!({"cniVersion": version, "name": "lo-test", "type": "loopback"})
}

fn call(env: &HostAndContainer, command: &str, conf: &Value) -> PluginOutput {
    CniCall::new(env!("CARGO_BIN_EXE_loopback"))
        .command(command)
        .container_id("ctr-1")
        .netns(env.ctr.path())
        .ifname("lo")
        .path(&[std::path::Path::new("/nonexistent")])
        .stdin_json(conf)
        .run_in(&env.host)
        .expect("run loopback")
}

fn lo_is_up(env: &HostAndContainer) -> bool {
    env.ctr.netlink().link_by_name("lo").unwrap().unwrap().up
}

#[test]
fn add_check_del_in_every_version() {
    require_root();
    for version in VERSIONS {
        let env = HostAndContainer::new().unwrap();
        // TestNetns brings lo up for convenience; start from the state a new netns has.
        let lo = env.ctr.netlink().link_by_name("lo").unwrap().unwrap();
        env.ctr.netlink().set_down(lo.index).unwrap();

        let result = call(&env, "ADD", &conf(version)).expect_success();
        assert!(lo_is_up(&env), "{version}: lo is not up after ADD");
        assert_eq!(result["cniVersion"], version);
        assert_eq!(result["interfaces"][0]["name"], "lo");
        assert_eq!(
            result["interfaces"][0]["sandbox"],
            env.ctr.path().display().to_string()
        );
        let addrs: Vec<&str> = result["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ip| ip["address"].as_str().unwrap())
            .collect();
        assert_eq!(addrs, ["127.0.0.1/8", "::1/128"], "{version}");
        assert_eq!(result["ips"][0].get("version").is_some(), version < "1.0.0");

        let mut with_prev = conf(version);
        with_prev["prevResult"] = result.clone();
        if version >= "0.4.0" {
            call(&env, "CHECK", &with_prev).expect_success();
        }
        assert_eq!(call(&env, "DEL", &with_prev).expect_success(), Value::Null);
        assert!(!lo_is_up(&env), "{version}: lo is still up after DEL");
        if version >= "0.4.0" {
            let out = call(&env, "CHECK", &with_prev);
            assert!(!out.success(), "{version}: CHECK passed with lo down");
            assert!(
                out.json().unwrap()["msg"]
                    .as_str()
                    .unwrap()
                    .contains("down")
            );
        }
        // DEL twice is fine.
        call(&env, "DEL", &with_prev).expect_success();
    }
}

#[test]
fn passes_prev_result_through() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
        "ips": [{"address": "198.18.0.9/24", "interface": 0}], "dns": {}});
    let mut c = conf("1.0.0");
    c["prevResult"] = prev.clone();
    assert_eq!(call(&env, "ADD", &c).expect_success(), prev);
}

#[test]
fn del_tolerates_a_vanished_or_absent_netns() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let out = CniCall::new(env!("CARGO_BIN_EXE_loopback"))
        .command("DEL")
        .container_id("ctr-1")
        .netns("/run/netns/bt-does-not-exist")
        .ifname("lo")
        .path(&[std::path::Path::new("/x")])
        .stdin_json(&conf("1.0.0"))
        .run_in(&env.host)
        .unwrap();
    assert_eq!(out.expect_success(), Value::Null);
    let out = CniCall::new(env!("CARGO_BIN_EXE_loopback"))
        .command("DEL")
        .container_id("ctr-1")
        .ifname("lo")
        .path(&[std::path::Path::new("/x")])
        .stdin_json(&conf("1.0.0"))
        .run_in(&env.host)
        .unwrap();
    assert_eq!(out.expect_success(), Value::Null);
}

#[test]
fn bad_input_gets_the_right_code_and_touches_nothing() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let lo = env.ctr.netlink().link_by_name("lo").unwrap().unwrap();
    env.ctr.netlink().set_down(lo.index).unwrap();
    let base = || {
        CniCall::new(env!("CARGO_BIN_EXE_loopback"))
            .command("ADD")
            .container_id("ctr-1")
            .netns(env.ctr.path())
            .ifname("lo")
            .path(&[std::path::Path::new("/x")])
    };
    let cases: Vec<(&str, CniCall, u64)> = vec![
        ("malformed JSON", base().stdin("{\"cniVersion\": "), 6),
        ("unknown version", base().stdin_json(&conf("0.9.9")), 1),
        (
            "missing CNI_COMMAND",
            base().env_remove("CNI_COMMAND").stdin_json(&conf("1.0.0")),
            4,
        ),
        (
            "missing CNI_CONTAINERID",
            base()
                .env_remove("CNI_CONTAINERID")
                .stdin_json(&conf("1.0.0")),
            4,
        ),
        (
            "missing CNI_IFNAME",
            base().env_remove("CNI_IFNAME").stdin_json(&conf("1.0.0")),
            4,
        ),
        (
            "16-byte ifname",
            base().ifname("a234567890123456").stdin_json(&conf("1.0.0")),
            4,
        ),
        (
            "ifname with /",
            base().ifname("a/b").stdin_json(&conf("1.0.0")),
            4,
        ),
        (
            "container id ../",
            base().container_id("../etc").stdin_json(&conf("1.0.0")),
            4,
        ),
        (
            "netns that is not there",
            base()
                .netns("/run/netns/bt-gone")
                .stdin_json(&conf("1.0.0")),
            4,
        ),
    ];
    for (what, call, code) in cases {
        let out = call.run_in(&env.host).unwrap();
        assert!(!out.success(), "{what}: {out:?}");
        let err = out
            .json()
            .unwrap_or_else(|e| panic!("{what}: stdout not JSON: {e}: {out:?}"));
        assert_eq!(err["code"], code, "{what}: {out:?}");
        assert!(!err["msg"].as_str().unwrap().is_empty());
    }
    assert!(!lo_is_up(&env), "a failed call brought lo up");
}

#[test]
fn version_status_gc() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let out = CniCall::new(env!("CARGO_BIN_EXE_loopback"))
        .command("VERSION")
        .stdin("{\"cniVersion\":\"1.1.0\"}")
        .run_in(&env.host)
        .unwrap()
        .expect_success();
    assert_eq!(out["supportedVersions"], json!(VERSIONS));
    let mut gc_conf = conf("1.1.0");
    gc_conf["cni.dev/valid-attachments"] = json!([{"containerID": "ctr-1", "ifname": "lo"}]);
    for (verb, conf) in [("STATUS", conf("1.1.0")), ("GC", gc_conf)] {
        let out = CniCall::new(env!("CARGO_BIN_EXE_loopback"))
            .command(verb)
            .path(&[std::path::Path::new("/x")])
            .stdin_json(&conf)
            .run_in(&env.host)
            .unwrap();
        assert_eq!(out.expect_success(), Value::Null, "{verb}");
    }
}
