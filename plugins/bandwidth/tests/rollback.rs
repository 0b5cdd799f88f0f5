//! A failed ADD undoes everything it did: ADD is made to fail right after each of its steps
//! (`Bandwidth { failpoint }`), in process, and by real kernel refusals half-way (the egress
//! part failing after the ingress part was set up). Nothing of ours may be left, and what was
//! there before must still be there.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use bandwidth::config::BandwidthConf;
use bandwidth::{Bandwidth, Step};
use berth_cni::plugin::parse_conf;
use berth_cni::{CmdArgs, Command, ContainerId, ErrorCode, IfName, NetConf, Plugin};
use common::*;
use netns_fixtures::require_root;
use serde_json::{Value, json};

fn args(command: Command, w: &World) -> CmdArgs {
    CmdArgs::new(
        command,
        ContainerId::try_from("rb-1").unwrap(),
        Some(w.ctr.path()),
        IfName::try_from(CTR_IF).unwrap(),
        Vec::new(),
    )
}

fn netconf(conf: &Value) -> NetConf<BandwidthConf> {
    parse_conf(conf.to_string().as_bytes()).unwrap()
}

#[test]
fn failed_add_leaves_nothing_after_any_step() {
    require_root();
    let w = World::new(None, 1500);
    let mut keys = both_limits();
    for subnets in [None, Some(json!(["198.18.0.0/15", "fd42:b347::/48"]))] {
        if let Some(nets) = subnets {
            keys["unshapedSubnets"] = nets;
        }
        let nc = netconf(&bw_conf(
            "1.1.0",
            "bwrb",
            keys.clone(),
            Some(w.ctr.prev_result("1.1.0")),
        ));
        let add = args(Command::Add, &w);
        for step in Step::ALL {
            let plugin = Bandwidth {
                failpoint: Some(step),
            };
            let err = w.host.run(|| plugin.add(&add, &nc)).unwrap().unwrap_err();
            assert_eq!(err.code, ErrorCode::Internal, "{step}: {err}");
            assert!(
                err.msg.contains(&format!("after step {step}")),
                "{step}: {err}"
            );
            w.assert_clean();
        }
        // The same call without a failpoint works in the same world: nothing stale in the way.
        let result = w
            .host
            .run(|| Bandwidth::default().add(&add, &nc))
            .unwrap()
            .unwrap();
        assert_eq!(result.interfaces.len(), 3);
        let del = args(Command::Del, &w);
        w.host
            .run(|| Bandwidth::default().del(&del, &nc))
            .unwrap()
            .unwrap();
        w.assert_clean();
    }
}

/// The kernel refuses a step half-way because something else is in the way: what ADD created
/// goes, what was there stays.
#[test]
fn egress_failing_after_ingress_is_rolled_back() {
    require_root();
    let w = World::new(None, 1500);
    let conf = bw_conf(
        "1.0.0",
        "bwrb2",
        both_limits(),
        Some(w.ctr.prev_result("1.0.0")),
    );
    w.tc(&["qdisc", "add", "dev", &w.ctr.host_if, "ingress"]);
    let out = call_ctr(ours(), &w, "ADD", "rb-2", &conf);
    assert_eq!(error_code(&out), 999);
    assert!(
        error_msg(&out).starts_with("add the ingress qdisc on"),
        "{out:?}"
    );
    assert!(w.ifbs().is_empty());
    assert_eq!(w.added_qdiscs(&w.ctr.host_if), ["ingress ffff:"]);
    w.tc(&["qdisc", "del", "dev", &w.ctr.host_if, "ingress"]);
    w.assert_clean();

    // An ifb of that name exists already (a stranger's, or a leftover): ADD fails without
    // touching it, and undoes the ingress tbf it had set up.
    let ifb = bandwidth::ifb_name("bwrb2", "rb-2");
    w.host.ip(&["link", "add", &ifb, "type", "ifb"]).unwrap();
    let out = call_ctr(ours(), &w, "ADD", "rb-2", &conf);
    assert_eq!(error_code(&out), 999);
    assert!(
        error_msg(&out).starts_with(&format!("create ifb device {ifb}")),
        "{out:?}"
    );
    assert!(w.added_qdiscs(&w.ctr.host_if).is_empty());
    assert!(w.host_link(&ifb).is_some(), "the existing ifb was deleted");
    w.host.ip(&["link", "del", &ifb]).unwrap();
    w.assert_clean();

    // Someone else's root qdisc with the same handle on the host end: ADD fails at once and
    // leaves it alone (the undo is registered only for a qdisc ADD created).
    let host_if = w.ctr.host_if.as_str();
    w.tc(&[
        "qdisc", "add", "dev", host_if, "root", "handle", "1:", "tbf", "rate", "1mbit", "burst",
        "10kb", "latency", "50ms",
    ]);
    let out = call_ctr(ours(), &w, "ADD", "rb-2", &conf);
    assert_eq!(error_code(&out), 999);
    assert!(
        error_msg(&out).starts_with("shape traffic into the container on"),
        "{out:?}"
    );
    assert!(
        w.tc(&["qdisc", "show", "dev", host_if])
            .contains("rate 1Mbit")
    );
    assert!(w.ifbs().is_empty());
    w.tc(&["qdisc", "del", "dev", host_if, "root"]);
    w.assert_clean();
}

/// Found by berth-fuzz's crash injection: an ADD killed between adding the ingress qdisc and
/// its redirect filter leaves the ifb and a bare ingress qdisc. DEL deleted the ifb but kept
/// the qdisc, since no filter showed it was ours; the ifb of this attachment existing is what
/// shows it (ADD creates the qdisc right after it).
#[test]
fn del_cleans_up_after_an_add_killed_before_its_redirect() {
    require_root();
    let w = World::new(None, 1500);
    let conf = bw_conf(
        "1.0.0",
        "bwkill",
        both_limits(),
        Some(w.ctr.prev_result("1.0.0")),
    );
    call_ctr(ours(), &w, "ADD", "kill-1", &conf).expect_success();
    // The state of a kill right before the filter: the redirect never came.
    w.tc(&["filter", "del", "dev", &w.ctr.host_if, "ingress"]);
    call_ctr(ours(), &w, "DEL", "kill-1", &conf).expect_success();
    w.assert_clean();
}
