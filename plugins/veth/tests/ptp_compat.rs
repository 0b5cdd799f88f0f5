//! Host mode against the reference: Debian's `/usr/lib/cni/ptp` (v1.1.1) with the same
//! configuration (only `type` differs) must leave the same addresses and routes, give the same
//! result, and pass the same traffic.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::path::Path;

use berth_netlink::{IpFamily, Netlink};
use common::*;
use netns_fixtures::{CniCall, HostAndContainer, require_root, test_subnet_v4, test_subnet_v6};
use serde_json::{Value, json};

const PTP_DIR: &str = "/usr/lib/cni";

/// Links, addresses and routes of one namespace, interface indexes replaced by a role ("veth" for
/// the host end, whatever its name, "eth0" for the container's), link-local left out.
fn layout(nl: &Netlink, veth: &str) -> Vec<String> {
    let name_of = |index: Option<u32>| -> String {
        let Some(index) = index else {
            return "-".into();
        };
        let name = nl.link_by_index(index).unwrap().unwrap().name;
        if name == veth { "veth".into() } else { name }
    };
    let mut out: Vec<String> = nl
        .addrs(None)
        .unwrap()
        .into_iter()
        .filter(|a| !a.net.ip().is_loopback() && !a.net.to_string().starts_with("fe80"))
        .map(|a| {
            format!(
                "addr {} dev {} scope {:?}",
                a.net,
                name_of(Some(a.index)),
                a.scope
            )
        })
        .collect();
    for link in nl.links().unwrap().into_iter().filter(|l| l.name != "lo") {
        let name = name_of(Some(link.index));
        out.push(format!(
            "link {name} {:?} mtu {} up {}",
            link.kind, link.mtu, link.up
        ));
    }
    for family in [IpFamily::V4, IpFamily::V6] {
        for r in nl.routes(family, None).unwrap() {
            if r.dst.ip().is_loopback() || r.dst.to_string().starts_with("fe80") {
                continue;
            }
            let oif = name_of(r.oif);
            let mut route = r.clone();
            route.oif = None;
            out.push(format!("route {route} dev {oif}"));
        }
    }
    out.sort();
    out
}

fn run(plugin: &str, dir: &Path, env: &HostAndContainer, command: &str, conf: &Value) -> Value {
    CniCall::new(plugin)
        .command(command)
        .container_id("c1")
        .netns(env.ctr.path())
        .ifname("eth0")
        .path(&[dir])
        .stdin_json(conf)
        .run_in(&env.host)
        .unwrap()
        .expect_success()
}

#[test]
fn same_layout_result_and_traffic_as_reference_ptp() {
    require_root();
    let (v4, v6) = (test_subnet_v4(), test_subnet_v6());
    let mut outcomes = Vec::new();
    for (kind, plugin, dir) in [
        (
            "ptp",
            format!("{PTP_DIR}/ptp"),
            Path::new(PTP_DIR).to_path_buf(),
        ),
        ("veth", veth().to_owned(), plugin_dir()),
    ] {
        let env = HostAndContainer::new().unwrap();
        let mut conf = json!({"cniVersion": "1.0.0", "name": "compat", "type": kind, "mtu": 1450,
            "ipam": ipam(&env.data_dir(), v4, Some(v6))});
        conf["dns"] = json!({"nameservers": [nth_v4(v4, 1).to_string()]});
        let result = run(&plugin, &dir, &env, "ADD", &conf);
        let veth_name = result["interfaces"][0]["name"].as_str().unwrap().to_owned();
        let ctr = layout(env.ctr.netlink(), &veth_name);
        let host = layout(env.host.netlink(), &veth_name);
        let ips = result_ips(&result);
        // IPv4 both ways; ptp leaves DAD on, so its IPv6 is usable only a second or two later.
        assert!(ping(&env.ctr, nth_v4(v4, 1)), "{kind}: container -> host");
        assert!(ping(&env.host, ips[0].ip()), "{kind}: host -> container");
        if kind == "veth" {
            assert!(
                ping(&env.ctr, nth_v6(v6, 1)),
                "{kind}: container -> host v6"
            );
            assert!(ping(&env.host, ips[1].ip()), "{kind}: host -> container v6");
        }
        let mut comparable = result.clone();
        for iface in comparable["interfaces"].as_array_mut().unwrap() {
            iface.as_object_mut().unwrap().remove("mac");
        }
        comparable["interfaces"][0]["name"] = json!("veth");
        comparable["interfaces"][1]["sandbox"] = json!("ctr");
        run(&plugin, &dir, &env, "CHECK", &with_prev(&conf, &result));
        run(&plugin, &dir, &env, "DEL", &with_prev(&conf, &result));
        outcomes.push((kind, comparable, ctr, host));
    }
    let (ptp, ours) = (&outcomes[0], &outcomes[1]);
    assert_eq!(ours.1, ptp.1, "results differ");
    assert_eq!(ours.2, ptp.2, "container layouts differ");
    assert_eq!(ours.3, ptp.3, "host layouts differ");
    assert!(
        ours.2.iter().any(|l| l.contains("route 0.0.0.0/0 via")),
        "{:?}",
        ours.2
    );
}
