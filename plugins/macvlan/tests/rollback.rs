//! A failed ADD leaves nothing: no macvlan in the container, no IPAM reservation. ADD is made
//! to fail right after each of its steps (`Macvlan { failpoint }`, in process), and by real
//! failures once the link exists (the IPAM plugin refusing, a route the kernel refuses).

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use berth_cni::plugin::parse_conf;
use berth_cni::{CmdArgs, Command, ContainerId, ErrorCode, IfName, NetConf, Plugin};
use common::*;
use macvlan::config::MacvlanConf;
use macvlan::{Macvlan, Step};
use netns_fixtures::{require_root, test_subnet_v4, test_subnet_v6};
use serde_json::{Value, json};

fn args(world: &World, conf: &Value) -> CmdArgs {
    let mut args = CmdArgs::new(
        Command::Add,
        ContainerId::try_from("ctr-1").unwrap(),
        Some(world.ctr().path().to_path_buf()),
        IfName::try_from("eth0").unwrap(),
        vec![ours().cni_path],
    );
    args.stdin = conf.to_string().into_bytes();
    args
}

fn netconf(conf: &Value) -> NetConf<MacvlanConf> {
    parse_conf(conf.to_string().as_bytes()).unwrap()
}

/// Every step of `steps` in turn; then the same ADD without a failpoint works in the same
/// world (nothing stale is in the way) and DEL cleans up.
fn fail_after_each(world: &World, conf: &Value, steps: &[Step]) {
    let (add, nc) = (args(world, conf), netconf(conf));
    for &step in steps {
        let plugin = Macvlan {
            failpoint: Some(step),
        };
        let err = world
            .host()
            .run(|| plugin.add(&add, &nc))
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Internal, "{step}: {err}");
        assert!(
            err.msg.contains(&format!("after step {step}")),
            "{step}: {err}"
        );
        assert_clean(&step.to_string(), world.ctr(), &[], &world.data_dir());
    }
    let result = world
        .host()
        .run(|| Macvlan::default().add(&add, &nc))
        .unwrap()
        .unwrap();
    assert_eq!(result.interfaces[0].name, "eth0");
    world
        .host()
        .run(|| Macvlan::default().del(&add, &nc))
        .unwrap()
        .unwrap();
    assert_clean("after DEL", world.ctr(), &[], &world.data_dir());
}

#[test]
fn failed_layer3_add_leaves_nothing_after_any_step() {
    require_root();
    let world = World::new();
    let ipam = json!({"type": "host-local", "dataDir": world.data_dir(),
        "ranges": [[{"subnet": test_subnet_v4().to_string()}], [{"subnet": test_subnet_v6().to_string()}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]});
    let conf = world.conf("1.1.0", ipam, json!({"mtu": 1300}));
    fail_after_each(&world, &conf, &Step::LAYER3);
}

#[test]
fn failed_layer2_add_leaves_nothing_after_any_step() {
    require_root();
    let world = World::new();
    let conf = world.conf("1.0.0", Value::Null, json!({"mode": "private"}));
    fail_after_each(&world, &conf, &Step::LAYER2);
}

/// Real failures after the link exists, through the binary. The reference (1.1.1) leaves its
/// link behind in both cases (its deferred cleanup looks at a shadowed error variable).
#[test]
fn failures_after_the_link_exists_leave_nothing() {
    require_root();
    let ours = ours();
    let world = World::new();
    let call = Call::new(&ours, &world);
    let subnet = test_subnet_v4().to_string();

    // The IPAM plugin refuses (its range start is outside the subnet): its code is passed on.
    let mut ipam = world.ipam(&subnet);
    ipam["rangeStart"] = json!("198.19.255.1");
    let conf = world.conf("1.0.0", ipam, json!({}));
    let err = call.fail("ADD", &conf);
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .starts_with("IPAM plugin host-local ADD"),
        "{err}"
    );
    assert_clean("IPAM refused", world.ctr(), &[], &world.data_dir());

    // A route the kernel refuses: its gateway is not on any link of the container.
    let mut ipam = world.ipam(&subnet);
    ipam["routes"] = json!([{"dst": "198.19.0.0/24", "gw": "198.19.9.9"}]);
    let conf = world.conf("1.0.0", ipam, json!({}));
    let err = call.fail("ADD", &conf);
    assert_eq!(err["code"], 999, "{err}");
    assert!(err["msg"].as_str().unwrap().contains("route"), "{err}");
    assert_clean("route refused", world.ctr(), &[], &world.data_dir());

    // No IPAM plugin of that name on CNI_PATH.
    let conf = world.conf("1.0.0", json!({"type": "no-such-ipam"}), json!({}));
    call.fail("ADD", &conf);
    assert_clean("IPAM missing", world.ctr(), &[], &world.data_dir());
}
