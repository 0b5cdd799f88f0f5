//! Side by side with the reference plugins (Debian's containernetworking-plugins v1.1.1 in
//! /usr/lib/cni): the same configuration gives an equivalent result and connectivity. Also a
//! timing comparison, run by hand (`--ignored --nocapture`).

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use netns_fixtures::{CniCall, HostAndContainer, PluginOutput, require_root, test_subnet_v4};
use serde_json::{Value, json};

const REFERENCE_DIR: &str = "/usr/lib/cni";

struct Impl {
    bridge: String,
    cni_path: std::path::PathBuf,
}

fn ours() -> Impl {
    Impl {
        bridge: plugin().to_owned(),
        cni_path: ipam_dir(),
    }
}

fn reference() -> Impl {
    let bridge = Path::new(REFERENCE_DIR).join("bridge");
    assert!(
        bridge.exists(),
        "{} missing: install containernetworking-plugins",
        bridge.display()
    );
    Impl {
        bridge: bridge.to_string_lossy().into_owned(),
        cni_path: REFERENCE_DIR.into(),
    }
}

fn call(imp: &Impl, env: &HostAndContainer, command: &str, id: &str, conf: &Value) -> PluginOutput {
    CniCall::new(&imp.bridge)
        .command(command)
        .container_id(id)
        .netns(env.ctr.path())
        .ifname("eth0")
        .path(&[&imp.cni_path])
        .stdin_json(conf)
        .run_in(&env.host)
        .unwrap()
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn same_conf_gives_an_equivalent_result_and_connectivity() {
    require_root();
    let subnet = test_subnet_v4();
    let br = bridge_name();
    let mut results = Vec::new();
    for imp in [reference(), ours()] {
        let env = HostAndContainer::new().unwrap();
        let conf = conf(
            "1.0.0",
            &br,
            ipam_v4(subnet, &env.data_dir()),
            json!({"isDefaultGateway": true, "hairpinMode": true,
                   "dns": {"nameservers": ["198.18.0.53"]}}),
        );
        let result = call(&imp, &env, "ADD", "cmp-1", &conf).expect_success();
        let gw = result["ips"][0]["gateway"].as_str().unwrap().to_owned();
        assert!(ping(&env.ctr, &gw), "{}: gateway unreachable", imp.bridge);
        call(&imp, &env, "CHECK", "cmp-1", &with_prev(&conf, &result)).expect_success();
        call(&imp, &env, "DEL", "cmp-1", &with_prev(&conf, &result)).expect_success();
        assert!(reservations(&env.data_dir()).is_empty(), "{}", imp.bridge);
        let sandbox = env.ctr.path().to_string_lossy().into_owned();
        results.push((result, sandbox));
    }
    let [(theirs, their_ns), (mine, my_ns)] = <[_; 2]>::try_from(results).unwrap();
    // Same addresses, gateway, routes, dns.
    for key in ["cniVersion", "ips", "routes", "dns"] {
        assert_eq!(theirs[key], mine[key], "{key}:\n{theirs}\n{mine}");
    }
    // Same interface list shape: bridge, host veth, container; same keys in each entry.
    let (ti, mi) = (
        theirs["interfaces"].as_array().unwrap(),
        mine["interfaces"].as_array().unwrap(),
    );
    assert_eq!(ti.len(), mi.len());
    for (t, m) in ti.iter().zip(mi) {
        assert_eq!(keys(t), keys(m), "{t} vs {m}");
    }
    assert_eq!(ti[0]["name"], mi[0]["name"]);
    assert_eq!(ti[2]["name"], mi[2]["name"]);
    assert_eq!(ti[2]["sandbox"], their_ns.as_str());
    assert_eq!(mi[2]["sandbox"], my_ns.as_str());
    assert!(ti[1]["name"].as_str().unwrap().starts_with("veth"));
    assert!(mi[1]["name"].as_str().unwrap().starts_with("veth"));
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Not part of the suite: `cargo test -p bridge --test reference -- --ignored --nocapture`.
/// Ours is found with `netns_fixtures::bin`, so `BERTH_BIN_DIR=target/release` measures the
/// release build (bridge and host-local).
#[test]
#[ignore = "timing measurement, run by hand"]
fn measure_add_and_del_against_the_reference() {
    require_root();
    const ROUNDS: usize = 21;
    let ours = Impl {
        bridge: netns_fixtures::bin("bridge").to_string_lossy().into_owned(),
        cni_path: ipam_dir(),
    };
    for imp in [reference(), ours] {
        let env = HostAndContainer::new().unwrap();
        let conf = conf(
            "1.0.0",
            &bridge_name(),
            ipam_v4(test_subnet_v4(), &env.data_dir()),
            json!({"isDefaultGateway": true}),
        );
        // The first ADD creates the bridge; measure the steady state.
        let warm = call(&imp, &env, "ADD", "warm", &conf).expect_success();
        call(&imp, &env, "DEL", "warm", &with_prev(&conf, &warm)).expect_success();
        let (mut adds, mut dels) = (Vec::new(), Vec::new());
        for i in 0..ROUNDS {
            let id = format!("bench-{i}");
            let t = Instant::now();
            let r = call(&imp, &env, "ADD", &id, &conf).expect_success();
            adds.push(t.elapsed());
            let t = Instant::now();
            call(&imp, &env, "DEL", &id, &with_prev(&conf, &r)).expect_success();
            dels.push(t.elapsed());
        }
        eprintln!(
            "{}: ADD median {:?}, DEL median {:?} ({ROUNDS} rounds)",
            imp.bridge,
            median(adds),
            median(dels)
        );
    }
}
