//! The firewall binary, exec'd the way a runtime does, chained after the real `bridge`
//! (through the libcni-equivalent invoker) with real traffic between two networks,
//! table-driven over both firewall backends.
//!
//! Needs the plugin binaries: `cargo build -p bridge -p host-local -p portmap -p firewall`.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;

use berth_cni::invoke::{CniConfig, RuntimeConf};
use berth_cni::{CniResult, ContainerId, IfName, NetConfList};
use netns_fixtures::{
    CniCall, EchoServer, PluginOutput, TestNetns, bin, require_root, tcp_get, test_subnet_v4,
    unique_name,
};
use serde_json::{Value, json};

const BACKENDS: [&str; 2] = ["iptables", "nftables"];

/// The answer to one UDP datagram from `ns`, sent from `from_port`.
fn udp_get(ns: &TestNetns, to: SocketAddr, from_port: u16) -> Option<String> {
    let from = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), from_port);
    netns_fixtures::udp_get(ns, to, Some(from))
}

struct Net {
    list: NetConfList,
    name: String,
    ctr: TestNetns,
    rt: RuntimeConf,
    result: CniResult,
}

fn network(host: &TestNetns, cni: &CniConfig, backend: &str, data: &Path, ports: Value) -> Net {
    let bridge = unique_name("br");
    let name = format!("fw-{bridge}");
    let list = json!({
        "cniVersion": "1.1.0",
        "name": name,
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true,
             "ipMasqBackend": backend,
             "ipam": {"type": "host-local", "subnet": test_subnet_v4().to_string(),
                      "dataDir": data, "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "backend": backend, "capabilities": {"portMappings": true}},
        ]
    });
    let list = NetConfList::from_bytes(&serde_json::to_vec(&list).unwrap()).unwrap();
    let ctr = TestNetns::with_tag("c").unwrap();
    let mut rt = RuntimeConf::new(
        ContainerId::try_from("ctr-1").unwrap(),
        Some(ctr.path().to_owned()),
        IfName::try_from("eth0").unwrap(),
    );
    rt.capability_args.insert("portMappings".into(), ports);
    let result = host
        .run(|| cni.add_network_list(&list, &rt))
        .unwrap()
        .unwrap_or_else(|e| panic!("ADD: {}", berth_cni::invoke::error_chain(&e)));
    Net {
        list,
        name,
        ctr,
        rt,
        result,
    }
}

/// The firewall plugin alone on `net`, as a runtime runs it after bridge and portmap.
fn firewall(host: &TestNetns, net: &Net, command: &str, keys: Value) -> PluginOutput {
    let mut conf = json!({"cniVersion": "1.1.0", "name": net.name, "type": "firewall",
        "prevResult": net.result.to_value(berth_cni::CniVersion::V1_1_0)});
    for (k, v) in keys.as_object().unwrap() {
        conf[k] = v.clone();
    }
    let mut call = CniCall::new(env!("CARGO_BIN_EXE_firewall"))
        .command(command)
        .path(&[Path::new("/nonexistent")])
        .stdin_json(&conf);
    if command != "GC" && command != "STATUS" {
        call = call
            .container_id("ctr-1")
            .netns(net.ctr.path())
            .ifname("eth0");
    } else {
        conf["cni.dev/valid-attachments"] = json!([]);
        call = call.stdin_json(&conf);
    }
    call.run_in(host).unwrap()
}

fn isolation_lines(host: &TestNetns) -> String {
    let mut all = String::new();
    for (tool, args) in [
        ("iptables-save", vec![]),
        ("ip6tables-save", vec![]),
        ("nft", vec!["list", "ruleset"]),
    ] {
        let out = host.output(Command::new(tool).args(&args)).unwrap();
        all.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    all.lines()
        .filter(|l| l.contains("berth-isolation "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn strict_isolation_blocks_other_bridges_but_not_published_ports_or_replies() {
    require_root();
    for backend in BACKENDS {
        let host = TestNetns::with_tag("h").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let cni = CniConfig::new(
            vec![bin("firewall").parent().unwrap().to_path_buf()],
            tmp.path().join("cache"),
        );
        host.run(|| berth_netlink::sysctl::write("net/ipv4/ip_forward", "1"))
            .unwrap()
            .unwrap();
        let a = network(&host, &cni, backend, &tmp.path().join("data"), json!([]));
        let b = network(
            &host,
            &cni,
            backend,
            &tmp.path().join("data"),
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
        );
        let (ip_a, ip_b): (IpAddr, IpAddr) =
            (a.result.ips[0].address.ip(), b.result.ips[0].address.ip());
        let gw_a = a.result.ips[0].gateway.unwrap();
        let servers = [
            EchoServer::start(&a.ctr, SocketAddr::new(ip_a, 80), "a").unwrap(),
            EchoServer::start(&b.ctr, SocketAddr::new(ip_b, 80), "b").unwrap(),
        ];
        let (to_a, to_b) = (SocketAddr::new(ip_a, 80), SocketAddr::new(ip_b, 80));
        let published = SocketAddr::new(gw_a, 8080);

        // Open by default: the firewall plugin changes nothing.
        firewall(&host, &a, "ADD", json!({"backend": backend})).expect_success();
        assert_eq!(
            tcp_get(&a.ctr, to_b).as_deref(),
            Some("b"),
            "{backend}: open"
        );
        assert!(isolation_lines(&host).is_empty(), "{backend}");
        // A flow that exists before isolation.
        assert_eq!(
            udp_get(&a.ctr, to_b, 40000).as_deref(),
            Some("b"),
            "{backend}"
        );

        for net in [&a, &b] {
            firewall(
                &host,
                net,
                "ADD",
                json!({"backend": backend, "isolation": "strict"}),
            )
            .expect_success();
            firewall(
                &host,
                net,
                "CHECK",
                json!({"backend": backend, "isolation": "strict"}),
            )
            .expect_success();
        }
        assert_eq!(tcp_get(&a.ctr, to_b), None, "{backend}: a -> b isolated");
        assert_eq!(tcp_get(&b.ctr, to_a), None, "{backend}: b -> a isolated");
        assert_eq!(
            udp_get(&b.ctr, to_a, 40001),
            None,
            "{backend}: new udp flow"
        );
        assert_eq!(
            udp_get(&a.ctr, to_b, 40000).as_deref(),
            Some("b"),
            "{backend}: the established flow goes on"
        );
        assert_eq!(
            tcp_get(&a.ctr, published).as_deref(),
            Some("b"),
            "{backend}: b's published port from a"
        );
        // The reference's name for the same switch.
        firewall(
            &host,
            &a,
            "ADD",
            json!({"backend": backend, "ingressPolicy": "same-bridge"}),
        )
        .expect_success();

        // DEL of an attachment leaves the network's isolation; GC without attachments ends it.
        firewall(
            &host,
            &a,
            "DEL",
            json!({"backend": backend, "isolation": "strict"}),
        )
        .expect_success();
        assert_eq!(tcp_get(&b.ctr, to_a), None, "{backend}: after DEL");
        for net in [&a, &b] {
            firewall(&host, net, "GC", json!({"backend": backend})).expect_success();
        }
        assert!(
            isolation_lines(&host).is_empty(),
            "{backend}: {}",
            isolation_lines(&host)
        );
        assert_eq!(
            tcp_get(&b.ctr, to_a).as_deref(),
            Some("a"),
            "{backend}: after GC"
        );
        drop(servers);
        for net in [&a, &b] {
            host.run(|| cni.del_network_list(&net.list, &net.rt))
                .unwrap()
                .unwrap();
        }
    }
}

/// `iptables -P FORWARD DROP` in the namespace playing the host (as Docker leaves it): the
/// firewall plugin's accept rules let containers of two networks talk, rules in the admin
/// chain still run first, and DEL and GC take the rules away again.
#[test]
fn forward_accept_opens_a_drop_policy_for_containers_only() {
    require_root();
    let host = TestNetns::with_tag("h").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cni = CniConfig::new(
        vec![bin("firewall").parent().unwrap().to_path_buf()],
        tmp.path().join("cache"),
    );
    host.run(|| berth_netlink::sysctl::write("net/ipv4/ip_forward", "1"))
        .unwrap()
        .unwrap();
    let data = tmp.path().join("data");
    let a = network(&host, &cni, "iptables", &data, json!([]));
    let b = network(&host, &cni, "iptables", &data, json!([]));
    let (ip_a, ip_b) = (a.result.ips[0].address.ip(), b.result.ips[0].address.ip());
    let _servers = [
        EchoServer::start(&a.ctr, SocketAddr::new(ip_a, 80), "a").unwrap(),
        EchoServer::start(&b.ctr, SocketAddr::new(ip_b, 80), "b").unwrap(),
    ];
    let (to_a, to_b) = (SocketAddr::new(ip_a, 80), SocketAddr::new(ip_b, 80));
    let iptables = |args: &[&str]| {
        let out = host.output(Command::new("iptables").args(args)).unwrap();
        assert!(out.status.success(), "iptables {args:?}: {out:?}");
    };
    iptables(&["-w", "-P", "FORWARD", "DROP"]);
    assert_eq!(tcp_get(&a.ctr, to_b), None, "the policy drops");

    let keys = json!({"backend": "iptables"});
    for net in [&a, &b] {
        firewall(&host, net, "ADD", keys.clone()).expect_success();
        firewall(&host, net, "CHECK", keys.clone()).expect_success();
    }
    assert_eq!(
        tcp_get(&a.ctr, to_b).as_deref(),
        Some("b"),
        "a -> b accepted"
    );
    assert_eq!(
        tcp_get(&b.ctr, to_a).as_deref(),
        Some("a"),
        "b -> a accepted"
    );

    // The admin chain runs before our accepts: the host's rules there still win.
    let block = format!("{ip_a}/32");
    iptables(&["-w", "-A", "CNI-ADMIN", "-s", &block, "-j", "DROP"]);
    assert_eq!(tcp_get(&a.ctr, to_b), None, "admin rule dropped a");
    iptables(&["-w", "-D", "CNI-ADMIN", "-s", &block, "-j", "DROP"]);
    assert_eq!(tcp_get(&a.ctr, to_b).as_deref(), Some("b"));

    // Isolation still wins over the accepts.
    let strict = json!({"backend": "iptables", "isolation": "strict"});
    for net in [&a, &b] {
        firewall(&host, net, "ADD", strict.clone()).expect_success();
    }
    assert_eq!(tcp_get(&a.ctr, to_b), None, "isolated");
    for net in [&a, &b] {
        firewall(&host, net, "GC", strict.clone()).expect_success();
    }

    // DEL of a: a can no longer start connections; b still reaches a (its own rules accept
    // what it sends and the replies to it).
    firewall(&host, &a, "ADD", keys.clone()).expect_success();
    firewall(&host, &b, "ADD", keys.clone()).expect_success();
    firewall(&host, &a, "DEL", keys.clone()).expect_success();
    firewall(&host, &a, "DEL", keys.clone()).expect_success();
    assert_eq!(tcp_get(&a.ctr, to_b), None, "a's accept rules gone");
    assert_eq!(tcp_get(&b.ctr, to_a).as_deref(), Some("a"));
    let out = firewall(&host, &b, "CHECK", keys.clone());
    out.expect_success();
    // GC with no valid attachment takes b's rules too.
    firewall(&host, &b, "GC", keys.clone()).expect_success();
    let saved = host
        .output(Command::new("iptables-save").args(["-t", "filter"]))
        .unwrap();
    let saved = String::from_utf8_lossy(&saved.stdout).into_owned();
    let owned: Vec<&str> = saved
        .lines()
        .filter(|l| l.contains("BERTH-FWD-") || l.contains("\"berth "))
        .collect();
    assert!(owned.is_empty(), "left over: {owned:#?}");
    for net in [&a, &b] {
        host.run(|| cni.del_network_list(&net.list, &net.rt))
            .unwrap()
            .unwrap();
    }
}

#[test]
fn bad_config_and_status() {
    require_root();
    let host = TestNetns::with_tag("h").unwrap();
    let conf = |keys: Value| {
        let mut c = json!({"cniVersion": "1.1.0", "name": "fw-net", "type": "firewall",
            "prevResult": {"cniVersion": "1.1.0", "interfaces": [{"name": "br0"}], "dns": {}}});
        for (k, v) in keys.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let call = |command: &str, c: &Value| {
        CniCall::new(env!("CARGO_BIN_EXE_firewall"))
            .command(command)
            .container_id("ctr-1")
            .netns(host.path())
            .ifname("eth0")
            .path(&[Path::new("/nonexistent")])
            .stdin_json(c)
            .run_in(&host)
            .unwrap()
    };
    for (keys, code) in [
        (json!({"isolation": "loose"}), 7),
        (json!({"ingressPolicy": "open", "isolation": "strict"}), 7),
        (json!({"backend": "firewalld"}), 2),
        (json!({"backend": "ebtables"}), 7),
    ] {
        let out = call("ADD", &conf(keys.clone()));
        assert_eq!(out.json().unwrap()["code"], code, "{keys}: {out:?}");
    }
    let mut no_bridge = conf(json!({"isolation": "strict"}));
    no_bridge["prevResult"]["interfaces"] = json!([]);
    assert_eq!(call("ADD", &no_bridge).json().unwrap()["code"], 7);
    for backend in BACKENDS {
        call("STATUS", &conf(json!({"backend": backend}))).expect_success();
    }
}
