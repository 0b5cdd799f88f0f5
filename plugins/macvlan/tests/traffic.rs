//! Real traffic: two containers with macvlan links on one master reach each other in `bridge`
//! mode and do not in `private` mode; a new address is announced to the segment at once.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;
use netns_fixtures::{EchoServer, TestNetns, require_root, tcp_get, test_subnet_v4};
use serde_json::{Value, json};

/// Two containers (the world's and `b`) on the world's master in `mode`: B's echo server
/// answers A, or does not; DEL of both leaves nothing.
fn two_containers(world: &World, mode: &str, reachable: bool) {
    let ours = ours();
    let b = TestNetns::with_tag("b").unwrap();
    let subnet = test_subnet_v4().to_string();
    let conf = world.conf("1.0.0", world.ipam(&subnet), json!({"mode": mode}));
    let call_a = Call::new(&ours, world);
    let call_b = Call {
        ctr: b.path(),
        id: "ctr-b",
        ..Call::new(&ours, world)
    };
    let res_a = call_a.ok("ADD", &conf);
    let res_b = call_b.ok("ADD", &conf);
    let addr = |r: &Value| -> IpAddr {
        let a = r["ips"][0]["address"].as_str().unwrap();
        a.split('/').next().unwrap().parse().unwrap()
    };
    let to_b = SocketAddr::new(addr(&res_b), 7007);
    let _server = EchoServer::start(&b, to_b, "from-b").unwrap();
    let got = tcp_get(world.ctr(), to_b);
    if reachable {
        assert_eq!(got.as_deref(), Some("from-b"), "{mode}: A cannot reach B");
    } else {
        assert_eq!(got, None, "{mode}: A reached B");
    }
    call_a.ok("DEL", &with_prev(&conf, &res_a));
    call_b.ok("DEL", &with_prev(&conf, &res_b));
    assert_clean(mode, world.ctr(), &[], &world.data_dir());
    assert_eq!(links(b.netlink()), Vec::<String>::new());
}

#[test]
fn bridge_mode_containers_reach_each_other_on_a_veth_master() {
    require_root();
    two_containers(&World::new(), "bridge", true);
}

#[test]
fn bridge_mode_containers_reach_each_other_on_a_bridge_master() {
    require_root();
    two_containers(&World::with_bridge_parent(), "bridge", true);
}

#[test]
fn private_mode_containers_do_not_reach_each_other() {
    require_root();
    two_containers(&World::new(), "private", false);
}

/// With `arp_notify`, the new address is announced: a neighbour that accepts gratuitous ARP
/// learns the container's MAC without any traffic (the reference's announces too).
#[test]
fn a_new_address_is_announced_with_a_gratuitous_arp() {
    require_root();
    let world = World::new();
    let subnet = test_subnet_v4().to_string();
    // The neighbour: the far end of the master's cable, in the container's subnet.
    let host = world.host();
    host.ip(&[
        "addr",
        "add",
        &format!("{}/24", nth(&subnet, 254)),
        "dev",
        &world.peer,
    ])
    .unwrap();
    let key = format!("net/ipv4/conf/{}/arp_accept", world.peer);
    host.run(|| berth_netlink::sysctl::write(&key, "1"))
        .unwrap()
        .unwrap();
    let conf = world.conf("1.0.0", world.ipam(&subnet), json!({}));
    let ours = ours();
    let call = Call::new(&ours, &world);
    let result = call.ok("ADD", &conf);
    let ip = nth(&subnet, 2);
    let mac = result["interfaces"][0]["mac"].as_str().unwrap();
    // The ARP is sent as the link comes up; give the receiving side a moment.
    let learned = (0..20).any(|_| {
        let neigh = host
            .ip(&["neigh", "show", "dev", &world.peer, "to", &ip])
            .unwrap();
        if neigh.contains(mac) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
        false
    });
    assert!(learned, "{ip} at {mac} was not announced");
    call.ok("DEL", &with_prev(&conf, &result));
}
