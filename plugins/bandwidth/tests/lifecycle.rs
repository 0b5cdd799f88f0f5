//! Our plugin on its own: CNI 1.1.0 with STATUS and GC, a real chain behind our `veth` plugin,
//! the subnet keys (htb), DEL that is idempotent and survives a vanished namespace, and Go's
//! case-insensitive keys.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::path::Path;

use berth_netlink::Netns;
use common::*;
use netns_fixtures::{
    CniCall, HostAndContainer, PluginOutput, TestNetns, bin, require_root, test_subnet_v4,
};
use serde_json::{Value, json};

fn network_call(host: &TestNetns, command: &str, conf: &Value) -> PluginOutput {
    CniCall::new(ours())
        .command(command)
        .path(&[Path::new("/usr/lib/cni")])
        .stdin_json(conf)
        .run_in(host)
        .unwrap()
}

fn gc_conf(network: &str, valid: &[&str]) -> Value {
    let valid: Vec<Value> = valid
        .iter()
        .map(|id| json!({"containerID": id, "ifname": CTR_IF}))
        .collect();
    bw_conf(
        "1.1.0",
        network,
        json!({"cni.dev/valid-attachments": valid}),
        None,
    )
}

#[test]
fn version_1_1_0_add_check_status_del() {
    require_root();
    let w = World::new(None, 1500);
    let conf = bw_conf(
        "1.1.0",
        "bw11",
        both_limits(),
        Some(w.ctr.prev_result("1.1.0")),
    );
    let result = call_ctr(ours(), &w, "ADD", "c11", &conf).expect_success();
    assert_eq!(result["cniVersion"], "1.1.0");
    let ifb = bandwidth::ifb_name("bw11", "c11");
    assert_eq!(result["interfaces"][2]["name"], ifb.as_str());
    assert_eq!(
        w.host_link(&ifb).unwrap().alias.as_deref(),
        Some("berth-bandwidth:bw11")
    );
    call_ctr(ours(), &w, "CHECK", "c11", &conf).expect_success();
    network_call(&w.host, "STATUS", &conf).expect_success();

    // CHECK sees a changed limit, a missing redirect, a missing ifb.
    let mut other = conf.clone();
    other["egressRate"] = json!(40_000_000);
    let out = call_ctr(ours(), &w, "CHECK", "c11", &other);
    assert_eq!(error_code(&out), 999);
    assert!(
        error_msg(&out).contains("rate (bytes/s) 6250000, expected 5000000"),
        "{out:?}"
    );
    w.tc(&["qdisc", "del", "dev", &w.ctr.host_if, "ingress"]);
    let out = call_ctr(ours(), &w, "CHECK", "c11", &conf);
    assert!(error_msg(&out).contains("no filter on"), "{out:?}");

    call_ctr(ours(), &w, "DEL", "c11", &conf).expect_success();
    w.assert_clean();
    let out = call_ctr(ours(), &w, "CHECK", "c11", &conf);
    let msg = error_msg(&out);
    assert!(
        msg.contains("2 problems") && msg.contains("is missing"),
        "{msg}"
    );

    // STATUS refuses a configuration ADD would refuse.
    let bad = bw_conf("1.1.0", "bw11", json!({"ingressRate": 1000}), None);
    assert_eq!(error_code(&network_call(&w.host, "STATUS", &bad)), 7);
    // And the older versions have no STATUS or GC, nor CHECK before 0.4.0.
    let old = bw_conf("1.0.0", "bw11", both_limits(), None);
    assert_eq!(error_code(&network_call(&w.host, "STATUS", &old)), 1);
    let old = bw_conf(
        "0.3.1",
        "bw11",
        both_limits(),
        Some(w.ctr.prev_result("0.3.1")),
    );
    assert_eq!(error_code(&call_ctr(ours(), &w, "CHECK", "c11", &old)), 1);
}

#[test]
fn gc_removes_only_this_networks_stale_attachments() {
    require_root();
    let mut w = World::new(None, 1500);
    w.add_container(1500);
    w.add_container(1500);
    let ctrs = [&w.ctr, &w.others[0], &w.others[1]];
    let attachments = [("bwgc", "gc-1"), ("bwgc", "gc-2"), ("bwother", "gc-3")];
    for (ctr, (network, id)) in ctrs.iter().zip(attachments) {
        let conf = bw_conf(
            "1.1.0",
            network,
            both_limits(),
            Some(ctr.prev_result("1.1.0")),
        );
        call(ours(), &w.host, "ADD", id, Some(&ctr.path()), &conf).expect_success();
    }
    assert_eq!(w.ifbs().len(), 3);

    network_call(&w.host, "GC", &gc_conf("bwgc", &["gc-1"])).expect_success();
    let left: Vec<String> = w.ifbs().into_iter().map(|l| l.name).collect();
    let mut expected = vec![
        bandwidth::ifb_name("bwgc", "gc-1"),
        bandwidth::ifb_name("bwother", "gc-3"),
    ];
    expected.sort();
    let mut left_sorted = left.clone();
    left_sorted.sort();
    assert_eq!(left_sorted, expected);
    assert!(
        w.added_qdiscs(&w.others[0].host_if).is_empty(),
        "gc-2's shaping stays"
    );
    let conf1 = bw_conf(
        "1.1.0",
        "bwgc",
        both_limits(),
        Some(w.ctr.prev_result("1.1.0")),
    );
    call_ctr(ours(), &w, "CHECK", "gc-1", &conf1).expect_success();

    network_call(&w.host, "GC", &gc_conf("bwgc", &[])).expect_success();
    assert_eq!(w.ifbs().len(), 1, "only the other network's ifb is left");
    // Nothing stale: a no-op.
    network_call(&w.host, "GC", &gc_conf("bwgc", &[])).expect_success();

    let conf3 = bw_conf(
        "1.1.0",
        "bwother",
        both_limits(),
        Some(w.others[1].prev_result("1.1.0")),
    );
    call(
        ours(),
        &w.host,
        "DEL",
        "gc-3",
        Some(&w.others[1].path()),
        &conf3,
    )
    .expect_success();
    w.assert_clean();
}

/// The real chain: our `veth` plugin (ptp's layout, host-local IPAM) first, then bandwidth
/// with its result as prevResult; DEL in reverse order.
#[test]
fn chained_behind_our_veth_plugin() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let (veth, host_local) = (bin("veth"), bin("host-local"));
    let plugin_dir = host_local.parent().unwrap().to_path_buf();
    let run = |plugin: &Path, command: &str, conf: &Value| {
        CniCall::new(plugin)
            .command(command)
            .container_id("chain-1")
            .netns(env.ctr.path())
            .ifname(CTR_IF)
            .path(&[&plugin_dir])
            .stdin_json(conf)
            .run_in(&env.host)
            .unwrap()
    };
    let main = json!({"cniVersion": "1.1.0", "name": "bwchain", "type": "veth", "mtu": 1400,
        "ipam": {"type": "host-local", "subnet": test_subnet_v4().to_string(),
                 "dataDir": env.data_dir()}});
    let prev = run(&veth, "ADD", &main).expect_success();
    let conf = bw_conf("1.1.0", "bwchain", both_limits(), Some(prev.clone()));
    let result = run(Path::new(ours()), "ADD", &conf).expect_success();
    let ifaces = result["interfaces"].as_array().unwrap();
    assert_eq!(
        &ifaces[..ifaces.len() - 1],
        prev["interfaces"].as_array().unwrap().as_slice()
    );
    let host_if = prev["interfaces"][0]["name"].as_str().unwrap().to_owned();
    let ifb = bandwidth::ifb_name("bwchain", "chain-1");
    assert_eq!(
        env.host.netlink().link_by_name(&ifb).unwrap().unwrap().mtu,
        1400
    );
    let qdiscs = tc(&env.host, &["qdisc", "show", "dev", &host_if]);
    assert!(
        qdiscs.contains("tbf 1: root") && qdiscs.contains("ingress ffff:"),
        "{qdiscs}"
    );

    let conf = bw_conf("1.1.0", "bwchain", both_limits(), Some(result.clone()));
    run(Path::new(ours()), "CHECK", &conf).expect_success();
    run(Path::new(ours()), "DEL", &conf).expect_success();
    assert_host_clean(&env.host, &[&host_if]);
    let mut main_del = main.clone();
    main_del["prevResult"] = prev;
    run(&veth, "DEL", &main_del).expect_success();
}

/// `shapedSubnets`/`unshapedSubnets` (the newer reference): htb, two classes, one u32 filter
/// per subnet matching the remote end; CHECK follows; DEL removes it all.
#[test]
fn subnets_use_htb_with_u32_filters() {
    require_root();
    let w = World::new(None, 1500);
    let mut keys = both_limits();
    keys["unshapedSubnets"] = json!(["10.0.0.0/8", "fd00:db8:abcd:1234:e000::/68"]);
    let conf = bw_conf(
        "1.0.0",
        "bwnets",
        keys.clone(),
        Some(w.ctr.prev_result("1.0.0")),
    );
    call_ctr(ours(), &w, "ADD", "n1", &conf).expect_success();
    let ifb = bandwidth::ifb_name("bwnets", "n1");

    let classes = w.tc(&["class", "show", "dev", &w.ctr.host_if]);
    assert!(
        classes.contains("class htb 1:30 root prio 0 rate 20Mbit ceil 20Mbit burst 50000b"),
        "{classes}"
    );
    assert!(
        classes.contains("class htb 1:1 root prio 0 rate 800Gbit ceil 800Gbit"),
        "{classes}"
    );
    let qdisc = w.tc(&["qdisc", "show", "dev", &ifb]);
    assert!(
        qdisc.contains("htb 1: root") && qdisc.contains("default 0x30"),
        "{qdisc}"
    );
    // Into the container the remote end is the source (offset 12); out of it, the
    // destination (offset 16); IPv6: 8 and 24.
    let ingress = w.tc(&["filter", "show", "dev", &w.ctr.host_if, "parent", "1:"]);
    assert!(
        ingress.contains("match 0a000000/ff000000 at 12"),
        "{ingress}"
    );
    assert!(
        ingress.contains("match fd000db8/ffffffff at 8")
            && ingress.contains("match e0000000/f0000000 at 16"),
        "{ingress}"
    );
    let egress = w.tc(&["filter", "show", "dev", &ifb, "parent", "1:"]);
    assert!(egress.contains("match 0a000000/ff000000 at 16"), "{egress}");
    assert!(
        egress.contains("match fd000db8/ffffffff at 24") && egress.contains("*flowid 1:1"),
        "{egress}"
    );
    call_ctr(ours(), &w, "CHECK", "n1", &conf).expect_success();

    // The same limits for all traffic (tbf) are something else.
    let all = bw_conf(
        "1.0.0",
        "bwnets",
        both_limits(),
        Some(w.ctr.prev_result("1.0.0")),
    );
    assert_eq!(error_code(&call_ctr(ours(), &w, "CHECK", "n1", &all)), 999);
    // Only the listed subnets shaped: the default class flips, the filters go to 1:30.
    let mut only = keys.clone();
    only["shapedSubnets"] = only
        .as_object_mut()
        .unwrap()
        .remove("unshapedSubnets")
        .unwrap();
    let only = bw_conf("1.0.0", "bwnets", only, Some(w.ctr.prev_result("1.0.0")));
    let out = call_ctr(ours(), &w, "CHECK", "n1", &only);
    assert!(error_msg(&out).contains("expected 1"), "{out:?}");

    call_ctr(ours(), &w, "DEL", "n1", &conf).expect_success();
    w.assert_clean();
}

#[test]
fn del_is_idempotent_and_survives_a_vanished_netns() {
    require_root();
    let w = World::new(None, 1500);
    let conf = bw_conf(
        "1.0.0",
        "bwdel",
        both_limits(),
        Some(w.ctr.prev_result("1.0.0")),
    );
    // Before any ADD, twice after it, without prevResult, without a netns.
    call_ctr(ours(), &w, "DEL", "d1", &conf).expect_success();
    call_ctr(ours(), &w, "ADD", "d1", &conf).expect_success();
    call_ctr(ours(), &w, "DEL", "d1", &conf).expect_success();
    call_ctr(ours(), &w, "DEL", "d1", &conf).expect_success();
    w.assert_clean();
    let bare = bw_conf("1.0.0", "bwdel", json!({}), None);
    call(ours(), &w.host, "DEL", "d1", None, &bare).expect_success();

    // The namespace is destroyed (with the veth pair); the ifb in the host remains for DEL.
    let World { host, ctr, .. } = World::new(None, 1500);
    let conf = bw_conf(
        "1.0.0",
        "bwdel",
        both_limits(),
        Some(ctr.prev_result("1.0.0")),
    );
    let path = ctr.path();
    call(ours(), &host, "ADD", "d2", Some(&path), &conf).expect_success();
    drop(ctr);
    assert!(!path.exists());
    call(ours(), &host, "DEL", "d2", Some(&path), &conf).expect_success();
    call(ours(), &host, "DEL", "d2", None, &bare).expect_success();
    assert_host_clean(&host, &[]);

    // The netns file is gone but the namespace lives on (something still holds it), and the
    // pair with it: DEL finds the host end through prevResult.
    let World { host, ctr, .. } = World::new(None, 1500);
    let conf = bw_conf(
        "1.0.0",
        "bwdel",
        both_limits(),
        Some(ctr.prev_result("1.0.0")),
    );
    let (path, host_if) = (ctr.path(), ctr.host_if.clone());
    call(ours(), &host, "ADD", "d3", Some(&path), &conf).expect_success();
    let holder = Netns::open(&path).unwrap();
    drop(ctr);
    assert!(!path.exists() && host.netlink().link_by_name(&host_if).unwrap().is_some());
    call(ours(), &host, "DEL", "d3", Some(&path), &conf).expect_success();
    assert_host_clean(&host, &[&host_if]);
    drop(holder);
}

/// Go's encoding/json matches keys case-insensitively; the reference reads these, and so does
/// berth-cni.
#[test]
fn keys_match_case_insensitively_like_go() {
    require_root();
    let w = World::new(None, 1500);
    let keys = json!({"IngressRate": 20_000_000, "INGRESSBURST": 400_000,
                      "egressrate": 50_000_000, "EgressBurst": 800_000});
    let capability = json!({"RuntimeConfig": {"Bandwidth": {"IngressRate": 20_000_000,
        "ingressburst": 400_000, "EgressRate": 50_000_000, "egressBURST": 800_000}}});
    for keys in [keys, capability] {
        let conf = bw_conf(
            "1.0.0",
            "bwcase",
            keys.clone(),
            Some(w.ctr.prev_result("1.0.0")),
        );
        let result = call_ctr(ours(), &w, "ADD", "k1", &conf).expect_success();
        assert_eq!(
            result["interfaces"].as_array().unwrap().len(),
            3,
            "{keys}: no ifb"
        );
        let canonical = bw_conf(
            "1.0.0",
            "bwcase",
            both_limits(),
            Some(w.ctr.prev_result("1.0.0")),
        );
        call_ctr(ours(), &w, "CHECK", "k1", &canonical).expect_success();
        call_ctr(reference(), &w, "CHECK", "k1", &canonical).expect_success();
        call_ctr(ours(), &w, "DEL", "k1", &conf).expect_success();
        w.assert_clean();
    }
}
