//! A failed ADD leaves nothing behind: a failure is injected after each step (in-process,
//! through the plugin's failpoint). And a crashed ADD (no DEL ever comes) is cleaned up by GC.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use berth_cni::plugin::parse_conf;
use berth_cni::{CmdArgs, Command, ContainerId, IfName, NetConf, Plugin};
use bridge::{Bridge, BridgeConf, Step};
use common::*;
use netns_fixtures::{HostAndContainer, TestNetns, require_root, test_subnet_v4};
use serde_json::{Value, json};

fn cmd_args(command: Command, id: &str, ctr: &TestNetns, conf: &Value) -> CmdArgs {
    let mut args = CmdArgs::new(
        command,
        ContainerId::try_from(id).unwrap(),
        Some(ctr.path().to_path_buf()),
        IfName::try_from("eth0").unwrap(),
        vec![ipam_dir()],
    );
    args.stdin = conf.to_string().into_bytes();
    args
}

/// The first three octets of a /24 plus the dot: nothing in the ruleset may mention it.
fn subnet_mark(subnet: ipnetwork::Ipv4Network) -> String {
    let o = subnet.network().octets();
    format!("{}.{}.{}.", o[0], o[1], o[2])
}

#[test]
fn failure_after_each_step_rolls_everything_back() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let subnet = test_subnet_v4();
    let br = bridge_name();
    let conf = conf(
        "1.0.0",
        &br,
        ipam_v4(subnet, &env.data_dir()),
        json!({"isDefaultGateway": true, "ipMasq": true, "hairpinMode": true, "macspoofchk": true}),
    );
    let owner_comment = format!("berth {} rb-1 eth0", conf["name"].as_str().unwrap());
    let netconf: NetConf<BridgeConf> = parse_conf(conf.to_string().as_bytes()).unwrap();
    let args = cmd_args(Command::Add, "rb-1", &env.ctr, &conf);
    let mark = subnet_mark(subnet);

    for step in Step::ALL {
        let err = env
            .host
            .run(|| Bridge::failing_after(step).add(&args, &netconf))
            .unwrap()
            .unwrap_err();
        assert!(err.msg.contains(&format!("after step {step:?}")), "{err}");
        assert!(
            err.details.is_empty(),
            "{step:?}: an undo step failed: {err}"
        );
        assert!(
            veths(env.host.netlink()).is_empty(),
            "{step:?}: host veth left"
        );
        assert!(
            veths(env.ctr.netlink()).is_empty(),
            "{step:?}: container veth left"
        );
        assert!(
            reservations(&env.data_dir()).is_empty(),
            "{step:?}: IPAM reservation left"
        );
        let rules = ruleset(&env.host);
        assert!(!rules.contains(&mark), "{step:?}: rules left:\n{rules}");
        assert!(
            !rules.contains(&owner_comment),
            "{step:?}: MAC spoofing guard left:\n{rules}"
        );
        // Issue 11, finding 7: the bridge this ADD created went too.
        assert!(
            env.host.netlink().link_by_name(&br).unwrap().is_none(),
            "{step:?}: bridge {br} left"
        );
    }

    // A bridge that was there before the failed ADD stays: it is not the ADD's to remove.
    let other = TestNetns::with_tag("c0").unwrap();
    let first_args = cmd_args(Command::Add, "rb-0", &other, &conf);
    let first = env
        .host
        .run(|| Bridge::default().add(&first_args, &netconf))
        .unwrap()
        .unwrap();
    let err = env
        .host
        .run(|| Bridge::failing_after(Step::Veth).add(&args, &netconf))
        .unwrap()
        .unwrap_err();
    assert!(err.details.is_empty(), "{err}");
    assert!(env.host.netlink().link_by_name(&br).unwrap().is_some());
    let mut first_del = conf.clone();
    first_del["prevResult"] = first.to_value(netconf.cni_version);
    let first_del_netconf: NetConf<BridgeConf> =
        parse_conf(first_del.to_string().as_bytes()).unwrap();
    env.host
        .run(|| {
            Bridge::default().del(
                &cmd_args(Command::Del, "rb-0", &other, &first_del),
                &first_del_netconf,
            )
        })
        .unwrap()
        .unwrap();

    // Nothing in the way of the real thing.
    let ok = env
        .host
        .run(|| Bridge::default().add(&args, &netconf))
        .unwrap()
        .unwrap();
    assert!(ruleset(&env.host).contains(&mark));
    assert!(ruleset(&env.host).contains(&owner_comment));
    let mut del_conf = conf.clone();
    del_conf["prevResult"] = ok.to_value(netconf.cni_version);
    let del_netconf: NetConf<BridgeConf> = parse_conf(del_conf.to_string().as_bytes()).unwrap();
    let del_args = cmd_args(Command::Del, "rb-1", &env.ctr, &del_conf);
    env.host
        .run(|| Bridge::default().del(&del_args, &del_netconf))
        .unwrap()
        .unwrap();
    assert!(veths(env.host.netlink()).is_empty());
    assert!(reservations(&env.data_dir()).is_empty());
    let rules = ruleset(&env.host);
    assert!(
        !rules.contains(&mark) && !rules.contains(&owner_comment),
        "{rules}"
    );
}

/// The runtime crashed after ADD and never called DEL; the container's namespace is gone (and
/// the veth with it). GC with the attachments the runtime still knows releases the rest.
#[test]
fn gc_cleans_up_after_a_crashed_add_and_keeps_valid_attachments() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let kept = TestNetns::with_tag("c2").unwrap();
    let subnet = test_subnet_v4();
    let conf = conf(
        "1.1.0",
        &bridge_name(),
        ipam_v4(subnet, &env.data_dir()),
        json!({"isDefaultGateway": true, "ipMasq": true, "macspoofchk": true}),
    );
    let net = conf["name"].as_str().unwrap().to_owned();
    let crashed = call_in(&env.host, env.ctr.path(), "ADD", "crashed", &conf).expect_success();
    let alive = call_in(&env.host, kept.path(), "ADD", "alive", &conf).expect_success();
    assert_eq!(reservations(&env.data_dir()).len(), 2);
    let HostAndContainer { host, ctr, tmp } = env;
    drop(ctr);

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "alive", "ifname": "eth0"}]);
    netns_fixtures::CniCall::new(plugin())
        .command("GC")
        .path(&[&ipam_dir()])
        .stdin_json(&gc)
        .run_in(&host)
        .unwrap()
        .expect_success();

    let left = reservations(&tmp.path().join("data"));
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].ends_with(&ip_of(&alive, 0)), "{left:?}");
    let rules = ruleset(&host);
    assert!(
        !rules.contains(&ip_of(&crashed, 0)),
        "crashed rules left:\n{rules}"
    );
    assert!(
        rules.contains(&ip_of(&alive, 0)),
        "valid rules removed:\n{rules}"
    );
    assert!(
        !rules.contains(&format!("berth {net} crashed eth0")),
        "crashed MAC spoofing guard left:\n{rules}"
    );
    assert!(
        rules.contains(&format!("berth {net} alive eth0")),
        "valid MAC spoofing guard removed:\n{rules}"
    );
    // The kernel destroys a namespace (and its veths) asynchronously, after the last user.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while veths(host.netlink()).len() > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        veths(host.netlink()).len(),
        1,
        "the crashed veth should be gone"
    );
    call_in(
        &host,
        kept.path(),
        "CHECK",
        "alive",
        &with_prev(&conf, &alive),
    )
    .expect_success();

    call_in(
        &host,
        kept.path(),
        "DEL",
        "alive",
        &with_prev(&conf, &alive),
    )
    .expect_success();
    assert!(reservations(&tmp.path().join("data")).is_empty());
    let rules = ruleset(&host);
    assert!(!rules.contains(&subnet_mark(subnet)), "{rules}");
    assert!(!rules.contains(&format!("berth {net} ")), "{rules}");
}

#[test]
fn status_reports_ipam_and_firewall() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let conf = conf(
        "1.1.0",
        &bridge_name(),
        ipam_v4(test_subnet_v4(), &env.data_dir()),
        json!({"ipMasq": true}),
    );
    let status = |conf: &Value| {
        netns_fixtures::CniCall::new(plugin())
            .command("STATUS")
            .path(&[&ipam_dir()])
            .stdin_json(conf)
            .run_in(&env.host)
            .unwrap()
    };
    status(&conf).expect_success();
    // An IPAM plugin that cannot be found makes the network unusable.
    let mut broken = conf.clone();
    broken["ipam"]["type"] = json!("no-such-ipam");
    assert!(!status(&broken).success());
}
