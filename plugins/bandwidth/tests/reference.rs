//! Side by side with the reference (Debian's containernetworking-plugins 1.1.1 in
//! /usr/lib/cni): the same configuration, in the same kind of world, gives the same result JSON
//! and the same qdiscs and filters as `tc` shows them; each plugin's CHECK accepts what the
//! other programmed; after our DEL nothing is left. Bad input gets a code (the reference's
//! where the system refuses it) and leaves nothing.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use common::*;
use netns_fixtures::{require_root, unique_name};
use serde_json::{Value, json};

const CID: &str = "cmp-ctr";

/// The result with what differs between two worlds replaced: the ifb's MAC (random in both),
/// the container's netns path and address.
fn masked(result: Value, w: &World) -> Value {
    let text = result
        .to_string()
        .replace(&w.ctr.path().display().to_string(), "<netns>")
        .replace(&w.ctr.ip.to_string(), "<ip>");
    let mut result: Value = serde_json::from_str(&text).unwrap();
    if let Some(ifaces) = result["interfaces"].as_array_mut() {
        for iface in ifaces {
            if iface["name"].as_str().is_some_and(|n| n.starts_with("bwp")) {
                assert!(iface["mac"].is_string(), "ifb without a mac: {iface}");
                iface["mac"] = json!("<mac>");
            }
        }
    }
    result
}

/// One configuration through ADD, CHECK (both plugins) and DEL with `bin`; returns the masked
/// result and what tc showed after ADD.
fn run(bin: &str, version: &str, keys: &Value, host_if: &str) -> (Value, String) {
    let w = World::new(Some(host_if), 1400);
    let conf = bw_conf(
        version,
        "bwcmp",
        keys.clone(),
        Some(w.ctr.prev_result(version)),
    );
    let result = call_ctr(bin, &w, "ADD", CID, &conf).expect_success();
    let state = w.tc_state(&w.ctr);
    if version >= "0.4.0" {
        for checker in [reference(), ours()] {
            let out = call_ctr(checker, &w, "CHECK", CID, &conf);
            assert!(out.success(), "{checker} CHECK of {bin}'s {keys}: {out:?}");
        }
    }
    call_ctr(bin, &w, "DEL", CID, &conf).expect_success();
    assert!(w.ifbs().is_empty(), "{bin} left an ifb");
    if bin == ours() {
        w.assert_clean();
        // Idempotent.
        call_ctr(bin, &w, "DEL", CID, &conf).expect_success();
    }
    (masked(result, &w), state)
}

#[test]
fn same_result_and_qdiscs_as_the_reference() {
    require_root();
    let host_if = unique_name("v");
    let configs = [
        both_limits(),
        json!({"ingressRate": 1_000_000, "ingressBurst": 80_000}),
        // The capability, as the kubelet passes kubernetes.io/egress-bandwidth.
        json!({"capabilities": {"bandwidth": true},
               "runtimeConfig": {"bandwidth": {"egressRate": 2_000_000, "egressBurst": 160_000}}}),
        // A top-level entry wins whole: the capability's ingress limit is ignored.
        json!({"egressRate": 3_000_000, "egressBurst": 120_000,
               "runtimeConfig": {"bandwidth": {"ingressRate": 1_000_000, "ingressBurst": 80_000}}}),
        // Nothing to shape: prevResult passes through.
        json!({"ingressRate": 0, "ingressBurst": 0}),
        // Above 2^32 bytes/s (34 Gbit/s): the rate travels in the 64-bit attribute.
        json!({"ingressRate": 40_000_000_000u64, "ingressBurst": 800_000_000}),
    ];
    for version in REFERENCE_VERSIONS {
        for keys in &configs {
            let theirs = run(reference(), version, keys, &host_if);
            let mine = run(ours(), version, keys, &host_if);
            assert_eq!(mine.0, theirs.0, "{version} {keys}: results differ");
            assert_eq!(
                mine.1, theirs.1,
                "{version} {keys}: tc shows different shaping"
            );
        }
    }
}

/// The reference's DEL leaves its qdiscs on the host end (they go with the veth); with its
/// ifb deleted, the leftover redirect drops everything the container sends until then. Ours
/// removes them: its DEL cleans up after the reference's ADD too.
#[test]
fn our_del_cleans_up_after_the_reference() {
    require_root();
    let w = World::new(None, 1500);
    let conf = bw_conf(
        "1.0.0",
        "bwmix",
        both_limits(),
        Some(w.ctr.prev_result("1.0.0")),
    );
    call_ctr(reference(), &w, "ADD", CID, &conf).expect_success();
    call_ctr(reference(), &w, "DEL", CID, &conf).expect_success();
    assert!(w.ifbs().is_empty());
    assert!(
        !w.added_qdiscs(&w.ctr.host_if).is_empty(),
        "the reference now removes its qdiscs: update README"
    );

    let w = World::new(None, 1500);
    let conf = bw_conf(
        "1.0.0",
        "bwmix",
        both_limits(),
        Some(w.ctr.prev_result("1.0.0")),
    );
    call_ctr(reference(), &w, "ADD", CID, &conf).expect_success();
    call_ctr(ours(), &w, "DEL", CID, &conf).expect_success();
    w.assert_clean();
}

/// Bad input: the reference says 999 to everything; ours says 7 to a configuration it refuses
/// and 999 to what the system refuses (as every Berth plugin), and leaves nothing behind.
#[test]
fn bad_input_gets_a_code_and_leaves_nothing() {
    require_root();
    let w = World::new(None, 1500);
    let prev = w.ctr.prev_result("1.0.0");
    let no_host = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": CTR_IF, "sandbox": w.ctr.path()}]});
    let no_ifaces = json!({"cniVersion": "1.0.0"});
    let limit = json!({"ingressRate": 1000, "ingressBurst": 80_000});
    let cases: Vec<(&str, Value, Option<Value>)> = vec![
        (
            "rate 0, burst set",
            json!({"ingressRate": 0, "ingressBurst": 1000}),
            Some(prev.clone()),
        ),
        (
            "ingressRate without ingressBurst",
            json!({"ingressRate": 1000}),
            Some(prev.clone()),
        ),
        (
            "egressBurst without egressRate",
            json!({"egressBurst": 1000}),
            Some(prev.clone()),
        ),
        (
            "burst over 4 GB",
            json!({"ingressRate": 1000, "ingressBurst": 34_359_738_368u64}),
            Some(prev.clone()),
        ),
        // The kernel refuses an empty bucket (EINVAL) in the reference; refused up front here.
        (
            "burst too small for the rate",
            json!({"ingressRate": 1_000_000_000, "ingressBurst": 8}),
            Some(prev.clone()),
        ),
        // The reference leaves the ingress tbf, the ifb and the ingress qdisc behind.
        (
            "egress burst too small after a valid ingress",
            json!({"ingressRate": 1_000_000, "ingressBurst": 80_000,
                   "egressRate": 1_000_000_000, "egressBurst": 8}),
            Some(prev.clone()),
        ),
        (
            "rate below one byte per second",
            json!({"ingressRate": 7, "ingressBurst": 8000}),
            Some(prev.clone()),
        ),
        (
            "prevResult without a host interface",
            limit.clone(),
            Some(no_host),
        ),
        (
            "prevResult without interfaces",
            limit.clone(),
            Some(no_ifaces),
        ),
        ("no prevResult", limit.clone(), None),
    ];
    for (what, keys, prev) in cases {
        let conf = bw_conf("1.0.0", "bwbad", keys, prev);
        let theirs = call_ctr(reference(), &w, "ADD", CID, &conf);
        let mine = call_ctr(ours(), &w, "ADD", CID, &conf);
        eprintln!(
            "{what}: reference {:?}, ours {:?}",
            error_msg(&theirs),
            error_msg(&mine)
        );
        assert_eq!(error_code(&theirs), 999, "{what}");
        assert_eq!(error_code(&mine), 7, "{what}");
        // Clear what the reference left, then check we left nothing on our own.
        call_ctr(ours(), &w, "DEL", CID, &conf).expect_success();
        w.assert_clean();
        let mine = call_ctr(ours(), &w, "ADD", CID, &conf);
        assert_eq!(error_code(&mine), 7, "{what}");
        w.assert_clean();
    }

    // What the system refuses: a netns that does not exist, an interface that is no veth.
    let conf = bw_conf("1.0.0", "bwbad", both_limits(), Some(prev.clone()));
    let gone = w.ctr.path().with_file_name("bt-no-such-netns");
    for bin in [reference(), ours()] {
        let out = call(bin, &w.host, "ADD", CID, Some(&gone), &conf);
        assert_eq!(error_code(&out), 999, "{bin}: {out:?}");
        let out = netns_fixtures::CniCall::new(bin)
            .command("ADD")
            .container_id(CID)
            .netns(w.ctr.path())
            .ifname("lo")
            .path(&[std::path::Path::new("/usr/lib/cni")])
            .stdin_json(&conf)
            .run_in(&w.host)
            .unwrap();
        assert_eq!(error_code(&out), 999, "{bin}: {out:?}");
        assert!(
            error_msg(&out).contains("has no veth peer"),
            "{bin}: {out:?}"
        );
    }
    // A wrongly typed value: berth-cni's decoder (6); the reference's is 999.
    let conf = bw_conf("1.0.0", "bwbad", json!({"ingressRate": "1M"}), Some(prev));
    assert_eq!(
        error_code(&call_ctr(reference(), &w, "ADD", CID, &conf)),
        999
    );
    assert_eq!(error_code(&call_ctr(ours(), &w, "ADD", CID, &conf)), 6);
    w.assert_clean();
}

/// Where we refuse what the reference accepts: a burst smaller than one full-size frame, with
/// which tbf drops every such frame (the reference only gets a kernel warning); the newer
/// reference's subnet keys, checked as it checks them.
#[test]
fn stricter_than_the_reference() {
    require_root();
    let w = World::new(None, 1500);
    let prev = Some(w.ctr.prev_result("1.0.0"));
    // 1000 bytes at 1 Mbit/s.
    let small = bw_conf(
        "1.0.0",
        "bwstrict",
        json!({"ingressRate": 1_000_000, "ingressBurst": 8000}),
        prev.clone(),
    );
    call_ctr(reference(), &w, "ADD", CID, &small).expect_success();
    call_ctr(reference(), &w, "DEL", CID, &small).expect_success();
    call_ctr(ours(), &w, "DEL", CID, &small).expect_success();
    let out = call_ctr(ours(), &w, "ADD", CID, &small);
    assert_eq!(error_code(&out), 7);
    let msg = error_msg(&out);
    assert!(
        msg.contains("smaller than one full-size frame")
            && msg.contains("ingressBurst must be at least 12112 bits"),
        "{msg}"
    );
    w.assert_clean();

    for keys in [
        json!({"ingressRate": 1_000_000, "ingressBurst": 80_000,
               "shapedSubnets": ["10.0.0.0/8"], "unshapedSubnets": ["10.1.0.0/16"]}),
        json!({"ingressRate": 1_000_000, "ingressBurst": 80_000, "shapedSubnets": ["10.0.0.0"]}),
    ] {
        let out = call_ctr(
            ours(),
            &w,
            "ADD",
            CID,
            &bw_conf("1.0.0", "bwstrict", keys, prev.clone()),
        );
        assert_eq!(error_code(&out), 7, "{out:?}");
        w.assert_clean();
    }
}
