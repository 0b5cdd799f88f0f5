//! Timing of ADD and DEL against the reference ptp. Reports medians; asserts nothing.
//!
//! ```sh
//! cargo build --release -p veth -p host-local
//! BERTH_BIN_DIR=target/release cargo test -p veth --test bench -- --ignored --nocapture
//! ```

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use netns_fixtures::{
    CniCall, HostAndContainer, bin, require_root, test_subnet_v4, test_subnet_v6,
};
use serde_json::json;

const ROUNDS: usize = 21;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[test]
#[ignore = "timing report, run on demand"]
fn add_and_del_vs_reference_ptp() {
    require_root();
    let ours = bin("veth");
    let (ptp, ref_dir) = (
        Path::new("/usr/lib/cni/ptp").to_path_buf(),
        Path::new("/usr/lib/cni").to_path_buf(),
    );
    let our_dir = ours.parent().unwrap().to_path_buf();
    // CNI_PATH picks the IPAM plugin: ours, or the reference host-local for a comparison of
    // the veth plugins alone.
    for (kind, plugin, dir, v6) in [
        ("ptp", ptp.clone(), ref_dir.clone(), false),
        ("veth", ours.clone(), our_dir.clone(), false),
        ("veth", ours.clone(), ref_dir.clone(), false),
        ("ptp", ptp.clone(), ref_dir.clone(), true),
        ("veth", ours.clone(), our_dir.clone(), true),
        ("veth", ours.clone(), ref_dir.clone(), true),
    ] {
        let env = HostAndContainer::new().unwrap();
        let v6 = v6.then(test_subnet_v6);
        let conf = json!({"cniVersion": "1.0.0", "name": "bench", "type": kind,
            "ipam": ipam(&env.data_dir(), test_subnet_v4(), v6)});
        let call = |command: &str| {
            let start = Instant::now();
            CniCall::new(&plugin)
                .command(command)
                .container_id("c1")
                .netns(env.ctr.path())
                .ifname("eth0")
                .path(&[&dir])
                .stdin_json(&conf)
                .run_in(&env.host)
                .unwrap()
                .expect_success();
            start.elapsed()
        };
        let (mut add, mut del) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            add.push(call("ADD"));
            del.push(call("DEL"));
        }
        eprintln!(
            "{kind:>5} {}: ADD median {:?}, DEL median {:?} ({ROUNDS} rounds, IPAM {})",
            if v6.is_some() { "v4+v6" } else { "v4   " },
            median(add),
            median(del),
            dir.join("host-local").display()
        );
    }
}
