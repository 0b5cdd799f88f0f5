//! Keys in other casings: Go's encoding/json matches `"Master"`, `"Mode"`, `"MTU"`, `"MAC"` to
//! the reference's fields, so configurations written so work there; berth-cni matches keys the
//! same way (exact, else case-insensitive) for every plugin.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use common::*;
use netns_fixtures::{require_root, test_subnet_v4};
use serde_json::json;

#[test]
fn keys_match_case_insensitively_like_go() {
    require_root();
    let subnet = test_subnet_v4().to_string();
    let mut states = Vec::new();
    for imp in [reference(), ours()] {
        let world = World::new();
        let conf = world.conf(
            "1.0.0",
            world.ipam(&subnet),
            json!({"master": null, "Master": world.parent, "Mode": "private", "MTU": 1300,
                "MAC": "02:42:c6:12:00:50"}),
        );
        let call = Call::new(&imp, &world);
        let result = call.ok("ADD", &conf);
        let state = snapshot(world.ctr(), "eth0", true);
        assert_eq!(state["mode"], "Private", "{}: {state}", imp.name);
        assert_eq!(state["mtu"], 1300, "{}", imp.name);
        assert_eq!(state["mac"], "02:42:c6:12:00:50", "{}", imp.name);
        call.ok("DEL", &with_prev(&conf, &result));
        assert_clean(imp.name, world.ctr(), &[], &world.data_dir());
        states.push(state);
    }
    assert_eq!(states[0], states[1]);
}
