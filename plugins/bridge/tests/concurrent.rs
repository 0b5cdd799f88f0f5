//! Concurrent ADDs racing to create one bridge and its gateway address (the reference's
//! EEXIST failure), then concurrent DELs.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::collections::HashSet;
use std::sync::Barrier;

use common::*;
use netns_fixtures::{HostAndContainer, TestNetns, require_root, test_subnet_v4};
use serde_json::json;

const CONTAINERS: usize = 8;

#[test]
fn eight_adds_on_one_new_bridge_all_succeed_with_one_gateway() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let containers: Vec<TestNetns> = (0..CONTAINERS)
        .map(|_| TestNetns::with_tag("c").unwrap())
        .collect();
    let subnet = test_subnet_v4();
    let br = bridge_name();
    let conf = conf(
        "1.1.0",
        &br,
        ipam_v4(subnet, &env.data_dir()),
        json!({"isGateway": true}),
    );
    assert!(env.host.netlink().link_by_name(&br).unwrap().is_none());

    // All threads start their ADD at the same moment, racing to create the bridge and to add
    // its gateway address.
    let start = Barrier::new(CONTAINERS);
    let results: Vec<serde_json::Value> = std::thread::scope(|s| {
        let handles: Vec<_> = containers
            .iter()
            .enumerate()
            .map(|(i, ctr)| {
                let (host, conf, start) = (&env.host, &conf, &start);
                s.spawn(move || {
                    start.wait();
                    call_in(host, ctr.path(), "ADD", &format!("ctr-{i}"), conf).expect_success()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let ips: HashSet<String> = results.iter().map(|r| ip_of(r, 0)).collect();
    assert_eq!(ips.len(), CONTAINERS, "addresses handed out twice: {ips:?}");
    let bridge = link(env.host.netlink(), &br);
    let v4: Vec<_> = env
        .host
        .netlink()
        .addrs(Some(bridge.index))
        .unwrap()
        .into_iter()
        .filter(|a| a.net.is_ipv4())
        .collect();
    assert_eq!(v4.len(), 1, "{v4:?}");
    assert_eq!(v4[0].net.ip(), subnet.iter().nth(1).unwrap());
    let ports = veths(env.host.netlink());
    assert_eq!(ports.len(), CONTAINERS);
    assert!(ports.iter().all(|p| p.master == Some(bridge.index)));
    // Every container reaches the gateway.
    for ctr in &containers {
        assert!(ping(ctr, &subnet.iter().nth(1).unwrap().to_string()));
    }

    std::thread::scope(|s| {
        for (i, (ctr, r)) in containers.iter().zip(&results).enumerate() {
            let (host, conf) = (&env.host, &conf);
            s.spawn(move || {
                call_in(
                    host,
                    ctr.path(),
                    "DEL",
                    &format!("ctr-{i}"),
                    &with_prev(conf, r),
                )
                .expect_success();
            });
        }
    });
    assert!(veths(env.host.netlink()).is_empty());
    assert!(reservations(&env.data_dir()).is_empty());
    for ctr in &containers {
        assert!(veths(ctr.netlink()).is_empty());
    }
}
