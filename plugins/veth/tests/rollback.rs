//! A failed ADD undoes everything it did: ADD is made to fail right after each of its steps
//! (`Veth { failpoint }`), in process, and nothing may be left behind: no links, no routes in
//! the host, no IPAM reservation, no masquerade rules.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use berth_cni::plugin::parse_conf;
use berth_cni::{CmdArgs, Command, ContainerId, ErrorCode, IfName, NetConf, Plugin};
use common::*;
use netns_fixtures::{HostAndContainer, TestNetns, require_root, test_subnet_v4, test_subnet_v6};
use serde_json::{Value, json};
use veth::config::VethConf;
use veth::{Step, Veth};

fn args(command: Command, ctr: &TestNetns, ifname: &str, conf: &Value) -> CmdArgs {
    let mut args = CmdArgs::new(
        command,
        ContainerId::try_from("ctr-1").unwrap(),
        Some(ctr.path().to_path_buf()),
        IfName::try_from(ifname).unwrap(),
        vec![plugin_dir()],
    );
    args.stdin = conf.to_string().into_bytes();
    args
}

fn netconf(conf: &Value) -> NetConf<VethConf> {
    parse_conf(conf.to_string().as_bytes()).unwrap()
}

#[test]
fn failed_host_mode_add_leaves_nothing() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let mut conf = host_conf(
        "1.1.0",
        "rollback",
        ipam(&env.data_dir(), test_subnet_v4(), Some(test_subnet_v6())),
    );
    conf["ipMasq"] = json!(true);
    let (add, nc) = (args(Command::Add, &env.ctr, "eth0", &conf), netconf(&conf));
    for step in Step::HOST {
        let plugin = Veth {
            failpoint: Some(step),
        };
        let err = env.host.run(|| plugin.add(&add, &nc)).unwrap().unwrap_err();
        assert_eq!(err.code, ErrorCode::Internal, "{step}: {err}");
        assert!(
            err.msg.contains(&format!("after step {step}")),
            "{step}: {err}"
        );
        assert_clean(&env.host, &[&env.ctr], &env.data_dir());
    }
    // The same call without a failpoint works in the same world: nothing stale is in the way.
    let result = env
        .host
        .run(|| Veth::default().add(&add, &nc))
        .unwrap()
        .unwrap();
    assert_eq!(result.ips.len(), 2);
    let del = args(Command::Del, &env.ctr, "eth0", &conf);
    env.host
        .run(|| Veth::default().del(&del, &nc))
        .unwrap()
        .unwrap();
    assert_clean(&env.host, &[&env.ctr], &env.data_dir());
}

#[test]
fn failed_peer_mode_add_leaves_nothing() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let b = TestNetns::with_tag("b").unwrap();
    let v4 = test_subnet_v4();
    let conf = json!({"cniVersion": "1.0.0", "name": "rbpeer", "type": "veth",
        "ipam": ipam(&env.data_dir(), v4, Some(test_subnet_v6())),
        "peer": {"netns": b.path(), "ifname": "eth9", "addresses": [format!("{}/24", nth_v4(v4, 1))]}});
    let (add, nc) = (args(Command::Add, &env.ctr, "eth1", &conf), netconf(&conf));
    for step in Step::PEER {
        let plugin = Veth {
            failpoint: Some(step),
        };
        let err = env.host.run(|| plugin.add(&add, &nc)).unwrap().unwrap_err();
        assert!(
            err.msg.contains(&format!("after step {step}")),
            "{step}: {err}"
        );
        assert_clean(&env.host, &[&env.ctr, &b], &env.data_dir());
    }
    env.host
        .run(|| Veth::default().add(&add, &nc))
        .unwrap()
        .unwrap();
    let del = args(Command::Del, &env.ctr, "eth1", &conf);
    env.host
        .run(|| Veth::default().del(&del, &nc))
        .unwrap()
        .unwrap();
    assert_clean(&env.host, &[&env.ctr, &b], &env.data_dir());
}

/// A real failure half-way (the kernel refuses a route) is rolled back the same way.
#[test]
fn kernel_failure_mid_add_is_rolled_back() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let v4 = test_subnet_v4();
    let mut ipam = ipam(&env.data_dir(), v4, None);
    // A route via a gateway that is not on-link: the kernel refuses it (ENETUNREACH) after
    // the pair, its addresses and the host's routes exist.
    ipam["routes"] = json!([{"dst": "198.19.0.0/16", "gw": "198.19.255.1"}]);
    let conf = host_conf("1.0.0", "kernelfail", ipam);
    let (add, nc) = (args(Command::Add, &env.ctr, "eth0", &conf), netconf(&conf));
    let err = env
        .host
        .run(|| Veth::default().add(&add, &nc))
        .unwrap()
        .unwrap_err();
    assert!(
        err.msg == "configure the routes via eth0"
            && err
                .details
                .starts_with("add route 198.19.0.0/16 via 198.19.255.1"),
        "{err}"
    );
    assert_clean(&env.host, &[&env.ctr], &env.data_dir());
}
