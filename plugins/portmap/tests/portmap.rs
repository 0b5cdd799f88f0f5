//! The portmap binary, exec'd the way a runtime does: chained after the real `bridge` and
//! `host-local` through the libcni-equivalent invoker, with real traffic, table-driven over
//! both firewall backends (and, for the plugin alone, every CNI version).
//!
//! Needs the plugin binaries: `cargo build -p bridge -p host-local -p portmap`.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use berth_cni::Attachment;
use common::{BACKENDS, World, owner_lines, ruleset, serve, sh, udp_get};
use netns_fixtures::{CniCall, HostAndContainer, require_root, tcp_get};
use serde_json::{Value, json};

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

fn sa(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

fn mappings() -> Value {
    json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
        {"hostPort": 9000, "containerPort": 9100, "protocol": "tcp", "range": 3}
    ])
}

#[test]
fn published_ports_work_through_the_chain() {
    require_root();
    for backend in BACKENDS {
        let w = World::new();
        let list = w.conflist("1.0.0", backend, json!({}));
        let rt1 = w.rt(&w.ctr1, "ctr-1", mappings());
        let rt2 = w.rt(&w.ctr2, "ctr-2", Value::Null);
        let r1 = w.add(&list, &rt1);
        w.add(&list, &rt2);
        let ctr_ip = r1.ips[0].address.ip();
        let mut servers = Vec::new();
        for port in [80u16, 53, 9100, 9101, 9102] {
            let reply = if port >= 9100 {
                format!("ctr1:{port}")
            } else {
                "ctr1".into()
            };
            servers.push(serve(&w.ctr1, sa(ctr_ip, port), &reply));
        }
        servers.push(serve(&w.far, sa(w.far_ip, 8080), "far"));
        let ctr1 = Some("ctr1".to_owned());
        let localhost: IpAddr = "127.0.0.1".parse().unwrap();
        w.check(&list, &rt1).unwrap();

        let cases: Vec<(&str, &netns_fixtures::TestNetns, SocketAddr, bool)> = vec![
            ("client tcp", &w.client, sa(w.host_ip, 8080), true),
            ("client udp", &w.client, sa(w.host_ip, 5353), false),
            ("localhost tcp", &w.host, sa(localhost, 8080), true),
            ("localhost udp", &w.host, sa(localhost, 5353), false),
            ("host ip", &w.host, sa(w.host_ip, 8080), true),
            (
                "hairpin from a neighbour",
                &w.ctr2,
                sa(w.host_ip, 8080),
                true,
            ),
            ("hairpin from itself", &w.ctr1, sa(w.host_ip, 8080), true),
            ("udp hairpin", &w.ctr2, sa(w.host_ip, 5353), false),
        ];
        for (what, ns, to, tcp) in &cases {
            let got = if *tcp {
                tcp_get(ns, *to)
            } else {
                udp_get(ns, *to)
            };
            assert_eq!(got, ctr1, "{backend}: {what}");
        }
        for (host, want) in [(9000, "ctr1:9100"), (9002, "ctr1:9102")] {
            assert_eq!(
                tcp_get(&w.client, sa(w.host_ip, host)).as_deref(),
                Some(want),
                "{backend}: range"
            );
        }
        // Routed through the host to another machine's 8080: not intercepted.
        assert_eq!(
            tcp_get(&w.client, sa(w.far_ip, 8080)).as_deref(),
            Some("far"),
            "{backend}: transit"
        );
        // Only the bridge, not every interface, lets 127/8 through.
        let localnet = |dev: &str| {
            w.host
                .run(|| berth_netlink::sysctl::read(&format!("net/ipv4/conf/{dev}/route_localnet")))
                .unwrap()
                .unwrap()
        };
        assert_eq!(localnet(&w.bridge), "1", "{backend}");
        assert_eq!(localnet("h1"), "0", "{backend}");

        w.del(&list, &rt1);
        assert_eq!(
            tcp_get(&w.client, sa(w.host_ip, 8080)),
            None,
            "{backend}: after del"
        );
        assert_eq!(
            tcp_get(&w.host, sa(localhost, 8080)),
            None,
            "{backend}: after del"
        );
        let left: Vec<String> = owner_lines(&w.host)
            .into_iter()
            .filter(|l| l.contains("ctr-1"))
            .collect();
        assert!(left.is_empty(), "{backend}: left over: {left:#?}");
        w.del(&list, &rt1);
        w.del(&list, &rt2);
        let left = owner_lines(&w.host);
        assert!(left.is_empty(), "{backend}: left over: {left:#?}");
        drop(servers);
    }
}

/// containerd 1.6 (go-cni 1.1.7) passes its CRI port mappings as a Go struct without json
/// tags, so the keys arrive capitalised; the reference reads them because Go matches keys
/// case-insensitively. Through the invoker, as containerd calls the chain.
#[test]
fn containerd_capitalised_port_mappings_publish_the_port() {
    require_root();
    for backend in BACKENDS {
        let w = World::new();
        let list = w.conflist("1.0.0", backend, json!({}));
        let maps = json!([
            {"HostPort": 18081, "ContainerPort": 8081, "Protocol": "tcp", "HostIP": ""},
            {"HostPort": 15353, "ContainerPort": 53, "Protocol": "udp", "HostIP": ""}
        ]);
        let rt = w.rt(&w.ctr1, "ctr-cd", maps);
        let result = w.add(&list, &rt);
        let ctr_ip = result.ips[0].address.ip();
        let servers = [
            serve(&w.ctr1, sa(ctr_ip, 8081), "ctr1"),
            serve(&w.ctr1, sa(ctr_ip, 53), "ctr1"),
        ];
        let want = Some("ctr1".to_owned());
        assert_eq!(tcp_get(&w.client, sa(w.host_ip, 18081)), want, "{backend}");
        assert_eq!(udp_get(&w.client, sa(w.host_ip, 15353)), want, "{backend}");
        w.check(&list, &rt).unwrap();
        w.del(&list, &rt);
        assert_eq!(tcp_get(&w.client, sa(w.host_ip, 18081)), None, "{backend}");
        let left = owner_lines(&w.host);
        assert!(left.is_empty(), "{backend}: left over: {left:#?}");
        drop(servers);
    }
}

/// `conditionsV4` in nft syntax: only the sources they name reach the published ports; an
/// unconditional neighbour on the same host is unaffected; CHECK, DEL and a changed
/// request without conditions all leave exactly what they should.
#[test]
fn nft_conditions_limit_who_reaches_a_published_port() {
    require_root();
    let w = World::new();
    let client_net = format!("{}/24", w.host_ip);
    let cond = w.conflist(
        "1.0.0",
        "nftables",
        json!({"conditionsV4": [format!("ip saddr {client_net}")]}),
    );
    let plain = w.conflist("1.0.0", "nftables", json!({}));
    let rt1 = w.rt(
        &w.ctr1,
        "ctr-1",
        json!([
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 9000, "containerPort": 9100, "protocol": "tcp", "range": 2}
        ]),
    );
    let rt2 = w.rt(
        &w.ctr2,
        "ctr-2",
        json!([{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]),
    );
    let r1 = w.add(&cond, &rt1);
    let r2 = w.add(&plain, &rt2);
    let (ip1, ip2) = (r1.ips[0].address.ip(), r2.ips[0].address.ip());
    let _servers = [
        serve(&w.ctr1, sa(ip1, 80), "ctr1"),
        serve(&w.ctr1, sa(ip1, 9100), "ctr1:9100"),
        serve(&w.ctr1, sa(ip1, 9101), "ctr1:9101"),
        serve(&w.ctr2, sa(ip2, 80), "ctr2"),
    ];
    let get = |ns, port| tcp_get(ns, sa(w.host_ip, port));
    assert_eq!(
        get(&w.client, 8080).as_deref(),
        Some("ctr1"),
        "allowed source"
    );
    assert_eq!(get(&w.client, 9001).as_deref(), Some("ctr1:9101"), "range");
    assert_eq!(get(&w.far, 8080), None, "a source the conditions exclude");
    assert_eq!(get(&w.far, 8081).as_deref(), Some("ctr2"), "no conditions");
    // nft prints the rules its own way: CHECK recognises them by digest.
    w.check(&cond, &rt1).unwrap();

    // DEL takes the chain too; without conditions, everyone reaches the port.
    w.del(&cond, &rt1);
    assert!(
        !owner_lines(&w.host)
            .iter()
            .any(|l| l.contains("ctr-1") || l.contains("hpc-")),
        "{:#?}",
        owner_lines(&w.host)
    );
    let r1 = w.add(&plain, &rt1);
    let _again = serve(&w.ctr1, sa(r1.ips[0].address.ip(), 80), "ctr1 again");
    assert_eq!(get(&w.far, 8080).as_deref(), Some("ctr1 again"));
    w.del(&plain, &rt1);
    w.del(&plain, &rt2);
    let left = owner_lines(&w.host);
    assert!(left.is_empty(), "left over: {left:#?}");
}

/// The plugin alone, with a hand-written previous result, in every CNI version.
fn prev_result(version: &str, ctr: &Path) -> Value {
    json!({"cniVersion": version,
        "interfaces": [{"name": "br-x"}, {"name": "veth-x"}, {"name": "eth0", "sandbox": ctr}],
        "ips": [{"address": "198.19.250.5/24", "gateway": "198.19.250.1", "interface": 2}],
        "dns": {}})
}

fn call(env: &HostAndContainer, command: &str, conf: &Value) -> netns_fixtures::PluginOutput {
    CniCall::new(env!("CARGO_BIN_EXE_portmap"))
        .command(command)
        .container_id("ctr-1")
        .netns(env.ctr.path())
        .ifname("eth0")
        .path(&[Path::new("/nonexistent")])
        .stdin_json(conf)
        .run_in(&env.host)
        .unwrap()
}

fn plugin_conf(version: &str, backend: &str, env: &HostAndContainer, maps: Value) -> Value {
    json!({"cniVersion": version, "name": "pm-net", "type": "portmap", "backend": backend,
        "runtimeConfig": {"portMappings": maps},
        "prevResult": prev_result(version, env.ctr.path())})
}

#[test]
fn add_check_del_in_every_version() {
    require_root();
    for backend in BACKENDS {
        for version in VERSIONS {
            let env = HostAndContainer::new().unwrap();
            let conf = plugin_conf(version, backend, &env, mappings());
            let out = call(&env, "ADD", &conf).expect_success();
            assert_eq!(out["cniVersion"], version, "{backend} {version}");
            assert_eq!(out["ips"][0]["address"], "198.19.250.5/24");
            assert!(!owner_lines(&env.host).is_empty(), "{backend} {version}");
            if version >= "0.4.0" {
                call(&env, "CHECK", &conf).expect_success();
            }
            call(&env, "DEL", &conf).expect_success();
            let left = owner_lines(&env.host);
            assert!(left.is_empty(), "{backend} {version}: {left:#?}");
            if version >= "0.4.0" {
                let out = call(&env, "CHECK", &conf);
                assert!(!out.success(), "{backend} {version}: CHECK after DEL");
            }
            // DEL is idempotent, also without the request.
            call(&env, "DEL", &conf).expect_success();
            let mut bare = conf.clone();
            bare.as_object_mut().unwrap().remove("runtimeConfig");
            bare.as_object_mut().unwrap().remove("prevResult");
            call(&env, "DEL", &bare).expect_success();
            // Without mappings ADD passes the result through and touches nothing.
            let empty = plugin_conf(version, backend, &env, json!([]));
            let before = ruleset(&env.host);
            assert_eq!(
                call(&env, "ADD", &empty).expect_success()["ips"],
                out["ips"]
            );
            assert_eq!(ruleset(&env.host), before, "{backend} {version}");
        }
    }
}

/// Issue 11, finding 3: with no port mappings, a network name too long for a rule comment
/// passed ADD but failed DEL with code 7 — and in a chain, DEL stopped there, so the bridge's
/// veth and the IP reservation were never released. No rule can carry such an owner, so DEL
/// has nothing to do; an ADD that would write rules refuses it with a clear error instead.
#[test]
fn del_accepts_every_owner_add_accepted() {
    require_root();
    let long = "n".repeat(140);
    for backend in BACKENDS {
        for version in ["0.4.0", "1.1.0"] {
            let env = HostAndContainer::new().unwrap();
            let mut conf = plugin_conf(version, backend, &env, json!([]));
            conf["name"] = json!(long);
            call(&env, "ADD", &conf).expect_success();
            call(&env, "DEL", &conf).expect_success();
            let mut bare = conf.clone();
            bare.as_object_mut().unwrap().remove("prevResult");
            call(&env, "DEL", &bare).expect_success();
            // With mappings ADD refuses the owner before touching anything.
            let before = ruleset(&env.host);
            let mut with_maps = plugin_conf(version, backend, &env, mappings());
            with_maps["name"] = json!(long);
            let out = call(&env, "ADD", &with_maps);
            assert_eq!(out.json().unwrap()["code"], 7, "{backend} {version}");
            assert_eq!(ruleset(&env.host), before, "{backend} {version}");
            call(&env, "DEL", &with_maps).expect_success();
            if version == "1.1.0" {
                let mut gc = conf.clone();
                gc.as_object_mut().unwrap().remove("prevResult");
                gc["cni.dev/valid-attachments"] =
                    json!([{"containerID": "ctr-1", "ifname": "eth0"}]);
                CniCall::new(env!("CARGO_BIN_EXE_portmap"))
                    .command("GC")
                    .path(&[Path::new("/nonexistent")])
                    .stdin_json(&gc)
                    .run_in(&env.host)
                    .unwrap()
                    .expect_success();
            }
        }
    }
}

#[test]
fn del_without_the_request_still_removes_everything() {
    require_root();
    for backend in BACKENDS {
        let env = HostAndContainer::new().unwrap();
        let conf = plugin_conf("1.0.0", backend, &env, mappings());
        call(&env, "ADD", &conf).expect_success();
        let mut bare = conf.clone();
        bare.as_object_mut().unwrap().remove("runtimeConfig");
        call(&env, "DEL", &bare).expect_success();
        let left = owner_lines(&env.host);
        assert!(left.is_empty(), "{backend}: {left:#?}");
    }
}

#[test]
fn bad_input_gets_a_clear_error_and_applies_nothing() {
    require_root();
    let cases: Vec<(&str, Value, Value, u64)> = vec![
        (
            "unknown protocol",
            json!({}),
            json!([{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}]),
            7,
        ),
        (
            "port 0",
            json!({}),
            json!([{"hostPort": 0, "containerPort": 80, "protocol": "tcp"}]),
            7,
        ),
        (
            "port > 65535",
            json!({}),
            json!([{"hostPort": 80, "containerPort": 65536, "protocol": "tcp"}]),
            7,
        ),
        (
            "reversed range",
            json!({}),
            json!([{"hostPort": 9010, "hostPortEnd": 9000, "containerPort": 80, "protocol": "tcp"}]),
            7,
        ),
        (
            "range past 65535",
            json!({}),
            json!([{"hostPort": 65530, "range": 10, "containerPort": 80, "protocol": "tcp"}]),
            7,
        ),
        (
            "hostIP of the wrong family",
            json!({}),
            json!([{"hostPort": 80, "containerPort": 80, "protocol": "tcp", "hostIP": "2001:db8::1"}]),
            7,
        ),
        (
            "hostIP not an address",
            json!({}),
            json!([{"hostPort": 80, "containerPort": 80, "protocol": "tcp", "hostIP": "host"}]),
            7,
        ),
        (
            "markMasqBit out of range",
            json!({"markMasqBit": 32}),
            mappings(),
            7,
        ),
        (
            "markMasqBit with externalSetMarkChain",
            json!({"markMasqBit": 5, "externalSetMarkChain": "KUBE-MARK-MASQ"}),
            mappings(),
            7,
        ),
        (
            "unknown backend",
            json!({"backend": "firewalld"}),
            mappings(),
            7,
        ),
        (
            "nft conditions on iptables",
            json!({"backend": "iptables", "conditionsV4": ["ip saddr 10.0.0.0/8"]}),
            mappings(),
            7,
        ),
        (
            "iptables conditions on nftables",
            json!({"backend": "nftables", "conditionsV4": ["-s", "10.0.0.0/8"]}),
            mappings(),
            7,
        ),
        (
            "externalSetMarkChain on nftables",
            json!({"backend": "nftables", "externalSetMarkChain": "KUBE-MARK-MASQ"}),
            mappings(),
            7,
        ),
        (
            "nft conditions nft rejects",
            json!({"backend": "nftables", "conditionsV4": ["ip saddrx 10.0.0.0/8"]}),
            mappings(),
            7,
        ),
        (
            "conditions that try to end the rule",
            json!({"backend": "nftables", "conditionsV4": ["ip saddr 10.0.0.0/8; flush ruleset"]}),
            mappings(),
            7,
        ),
    ];
    for (what, keys, maps, code) in cases {
        let env = HostAndContainer::new().unwrap();
        let mut conf = plugin_conf("1.0.0", "iptables", &env, maps);
        conf.as_object_mut().unwrap().remove("backend");
        for (k, v) in keys.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let before = ruleset(&env.host);
        let out = call(&env, "ADD", &conf);
        assert!(!out.success(), "{what}: {out:?}");
        let err = out.json().unwrap();
        assert_eq!(err["code"], code, "{what}: {err}");
        assert!(!err["msg"].as_str().unwrap().is_empty(), "{what}: {err}");
        assert_eq!(ruleset(&env.host), before, "{what}: something was applied");
    }
    // Chained only.
    let env = HostAndContainer::new().unwrap();
    let mut conf = plugin_conf("1.0.0", "iptables", &env, mappings());
    conf.as_object_mut().unwrap().remove("prevResult");
    let out = call(&env, "ADD", &conf);
    assert_eq!(out.json().unwrap()["code"], 7, "{out:?}");
}

#[test]
fn gc_removes_attachments_not_in_the_valid_list() {
    require_root();
    for backend in BACKENDS {
        let w = World::new();
        let list = w.conflist("1.1.0", backend, json!({}));
        let mut rts = Vec::new();
        for (n, ns) in [(1, &w.ctr1), (2, &w.ctr2)] {
            let rt = w.rt(
                ns,
                &format!("ctr-{n}"),
                json!([{"hostPort": 8080 + n, "containerPort": 80, "protocol": "tcp"}]),
            );
            w.add(&list, &rt);
            rts.push(rt);
        }
        let keep = [Attachment {
            container_id: rts[1].container_id.clone(),
            ifname: rts[1].ifname.clone(),
        }];
        // The plugins' GC verb only (the invoker's GC would also DEL cached attachments).
        let conf = json!({"cniVersion": "1.1.0", "name": list.name.as_str(), "type": "portmap",
            "backend": backend, "cni.dev/valid-attachments": keep});
        CniCall::new(env!("CARGO_BIN_EXE_portmap"))
            .command("GC")
            .path(&[Path::new("/nonexistent")])
            .stdin_json(&conf)
            .run_in(&w.host)
            .unwrap()
            .expect_success();
        // ctr-1's published port (8081) is gone, ctr-2's (8082) stays; their masquerade
        // rules are bridge's business.
        let lines = owner_lines(&w.host).join("\n");
        assert!(!lines.contains("8081"), "{backend}: {lines}");
        assert!(lines.contains("8082"), "{backend}: {lines}");
        w.check(&list, &rts[1]).unwrap();
        for rt in &rts {
            w.del(&list, rt);
        }
        let left = owner_lines(&w.host);
        assert!(left.is_empty(), "{backend}: {left:#?}");
    }
}

#[test]
fn status_reports_an_unusable_backend() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let status = |conf: &Value, path: Option<&str>| {
        let mut c = CniCall::new(env!("CARGO_BIN_EXE_portmap"))
            .command("STATUS")
            .path(&[Path::new("/nonexistent")])
            .stdin_json(conf);
        if let Some(p) = path {
            c = c.env("PATH", p);
        }
        c.run_in(&env.host).unwrap()
    };
    for backend in BACKENDS {
        let conf =
            json!({"cniVersion": "1.1.0", "name": "pm-net", "type": "portmap", "backend": backend});
        status(&conf, None).expect_success();
    }
    // An iptables that cannot even tell its version.
    let fake = tempfile::tempdir().unwrap();
    let script = fake.path().join("iptables");
    std::fs::write(&script, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let conf =
        json!({"cniVersion": "1.1.0", "name": "pm-net", "type": "portmap", "backend": "iptables"});
    let out = status(
        &conf,
        Some(&format!(
            "{}:/usr/sbin:/usr/bin:/sbin:/bin",
            fake.path().display()
        )),
    );
    assert_eq!(out.json().unwrap()["code"], 50, "{out:?}");
    let _ = sh;
}
