//! Networking through CNI, end to end: the default network (generated on first use),
//! containers reaching each other by name, `network create|ls|inspect|rm`, several networks,
//! `--ip`/`--mac-address`, `none` and `host`, and bad input. Every test runs `berth` in its
//! own throwaway host netns (so even the real default `berth0` / 10.210.0.0/16 is private to
//! it) and ends with the leak audit of `Env::assert_clean`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Env, assert_one_line_error};
use netns_fixtures::{test_subnet_v4, test_subnet_v6};
use serde_json::Value;

#[test]
fn detached_containers_on_the_default_network_ping_each_other_by_name() {
    let env = Env::new();
    env.run_detached(&["--name", "alpha", "busybox", "sleep", "60"]);
    env.run_detached(&["--name", "beta", "busybox", "sleep", "60"]);

    // The default network exists without set-up: berth0 with the gateway of 10.210.0.0/16.
    let addrs = env.host_sh("ip -o -4 addr show dev berth0");
    assert!(addrs.contains("10.210.0.1/16"), "{addrs}");
    let alpha_ip = &env.ips("alpha", "berth")[0];
    assert!(alpha_ip.starts_with("10.210."), "{alpha_ip}");

    for (from, to) in [("alpha", "beta"), ("beta", "alpha")] {
        let out = env.berth(&["exec", from, "ping", "-c", "1", "-W", "2", to]);
        assert_eq!(out.code, 0, "{from} -> {to}: {out:?}");
    }
    // alpha's hosts file was rewritten in place when beta joined; both name each other.
    let out = env.berth(&["exec", "alpha", "cat", "/etc/hosts", "/etc/hostname"]);
    assert!(out.stdout.contains("\tbeta "), "{out:?}");
    assert!(out.stdout.contains(&format!("{alpha_ip}\t")), "{out:?}");
    let out = env.berth(&["exec", "beta", "cat", "/etc/resolv.conf"]);
    assert!(out.stdout.contains("nameserver"), "{out:?}");

    // When alpha leaves, beta's hosts file forgets it.
    assert_eq!(env.berth(&["rm", "-f", "alpha"]).code, 0);
    let out = env.berth(&["exec", "beta", "cat", "/etc/hosts"]);
    assert!(!out.stdout.contains("alpha"), "{out:?}");
    assert_eq!(env.berth(&["rm", "-f", "beta"]).code, 0);
    env.assert_clean();
}

#[test]
fn network_create_ls_inspect_rm_and_several_networks() {
    let env = Env::new();
    let subnet = test_subnet_v4();
    let v6 = test_subnet_v6();
    let out = env.berth(&[
        "network",
        "create",
        "--subnet",
        &subnet.to_string(),
        "--subnet",
        &v6.to_string(),
        "--mtu",
        "1400",
        "lab",
    ]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "lab\n"), "{out:?}");

    let out = env.berth(&["network", "ls", "--json"]);
    let list: Value = serde_json::from_str(&out.stdout).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["berth", "lab"], "{out:?}");
    let table = env.berth(&["network", "ls"]);
    assert!(table.stdout.contains("10.210.0.0/16"), "{table:?}");

    let doc: Value =
        serde_json::from_str(&env.berth(&["network", "inspect", "lab"]).stdout).unwrap();
    assert_eq!(doc["driver"], "bridge");
    assert_eq!(doc["subnets"][0], subnet.to_string());
    assert_eq!(doc["mtu"], 1400);
    let bridge = doc["bridge"].as_str().unwrap().to_owned();
    assert!(doc["conflist"]["plugins"].is_array());

    // Same name, overlapping subnet, reserved and invalid names: refused, one line.
    for args in [
        &["network", "create", "lab"][..],
        &["network", "create", "--subnet", &subnet.to_string(), "lab2"],
        &["network", "create", "--subnet", "10.210.7.0/24", "lab3"],
        &["network", "create", "host"],
        &["network", "create", "--driver", "macvlan", "lab4"],
        &["network", "create", "--subnet", "10.1.2.3/24", "lab5"],
    ] {
        let out = env.berth(args);
        assert_one_line_error(&out);
    }

    // --isolate chains the firewall plugin; until it is built next to berth, a clear error.
    let firewall = std::path::Path::new(common::BERTH).with_file_name("firewall");
    let iso_subnet = test_subnet_v4().to_string();
    let out = env.berth(&[
        "network",
        "create",
        "--isolate",
        "--subnet",
        &iso_subnet,
        "iso",
    ]);
    if firewall.exists() {
        assert_eq!(out.code, 0, "{out:?}");
        let out = env.run(&["--rm", "--network", "iso", "busybox", "true"]);
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(env.berth(&["network", "rm", "iso"]).code, 0);
    } else {
        assert_one_line_error(&out);
        assert!(
            out.stderr.contains("the firewall plugin is not installed"),
            "{out:?}"
        );
    }

    // Two networks: eth0 on the default, eth1 on lab, with a requested IP and MAC on eth0.
    let ip = "10.210.0.77";
    let out = env.run(&[
        "--rm",
        "--network",
        "berth",
        "--network",
        "lab",
        "--ip",
        ip,
        "--mac-address",
        "02:42:0a:d2:00:4d",
        "busybox",
        "sh",
        "-c",
        "ip -o addr show eth0; ip -o link show eth0; ip -o addr show eth1; ip -o link show eth1",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(&format!("inet {ip}/16")), "{out:?}");
    assert!(out.stdout.contains("02:42:0a:d2:00:4d"), "{out:?}");
    let prefix = subnet.ip().to_string();
    let prefix = prefix.rsplit_once('.').unwrap().0;
    assert!(out.stdout.contains(&format!("inet {prefix}.")), "{out:?}");
    assert!(out.stdout.contains("inet6 fd42:b347:"), "{out:?}");
    assert!(out.stdout.contains("mtu 1400"), "{out:?}");

    // In use: refused; afterwards removed with its bridge.
    env.run_detached(&[
        "--name",
        "user",
        "--network",
        "lab",
        "busybox",
        "sleep",
        "60",
    ]);
    let out = env.berth(&["network", "rm", "lab"]);
    assert_one_line_error(&out);
    assert!(
        out.stderr.contains("in use by container(s) user"),
        "{out:?}"
    );
    assert_eq!(env.berth(&["rm", "-f", "user"]).code, 0);
    let out = env.berth(&["network", "rm", "lab"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!env.host_sh("ip -o link").contains(&bridge));
    let out = env.berth(&["network", "rm", "berth"]);
    assert_one_line_error(&out);
    let out = env.berth(&["network", "inspect", "lab"]);
    assert_one_line_error(&out);
    env.assert_clean();
}

#[test]
fn veth_driver_routes_through_the_host() {
    let env = Env::new();
    let subnet = test_subnet_v4();
    let out = env.berth(&[
        "network",
        "create",
        "--driver",
        "veth",
        "--subnet",
        &subnet.to_string(),
        "p2p",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let gateway = subnet.nth(1).unwrap().to_string();
    let out = env.run(&[
        "--rm",
        "--network",
        "p2p",
        "busybox",
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        &gateway,
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.berth(&["network", "rm", "p2p"]).code, 0);
    env.assert_clean();
}

#[test]
fn none_and_host_modes() {
    let env = Env::new();
    let out = env.run(&[
        "--rm",
        "--network",
        "none",
        "busybox",
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "lo\n"), "{out:?}");

    let host_ns = env.host_sh("readlink /proc/self/ns/net");
    let out = env.run(&[
        "--rm",
        "--network",
        "host",
        "busybox",
        "readlink",
        "/proc/self/ns/net",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, host_ns);
    env.assert_clean();
}

#[test]
fn bad_network_input_is_one_line_and_leaves_nothing() {
    let env = Env::new();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--network", "nowhere", "busybox", "true"],
            "network nowhere not found",
        ),
        (
            &["--network", "none", "--network", "berth", "busybox", "true"],
            "cannot be combined",
        ),
        (
            &["--network", "bad/name", "busybox", "true"],
            "invalid network name",
        ),
        (&["-p", "80", "busybox", "true"], "invalid -p"),
        (
            &["-p", "8080:80/sctp", "busybox", "true"],
            "unknown protocol",
        ),
        (&["-p", "70000:80", "busybox", "true"], "not a port"),
        (&["-p", "8080-8082:80-81", "busybox", "true"], "3 ports"),
        (
            &["-p", "8080:80", "-p", "8080:81", "busybox", "true"],
            "same host port",
        ),
        (
            &["--network", "none", "-p", "8080:80", "busybox", "true"],
            "needs a CNI network",
        ),
        (
            &["--ip", "192.0.2.1", "busybox", "true"],
            "not inside a subnet",
        ),
        (
            &["--mac-address", "01:00:5e:00:00:01", "busybox", "true"],
            "--mac-address",
        ),
    ];
    for (args, message) in cases {
        let out = env.run(args);
        assert_eq!(out.code, 125, "{args:?}: {out:?}");
        assert_one_line_error(&out);
        assert!(out.stderr.contains(message), "{args:?}: {out:?}");
    }
    env.assert_clean();
}
