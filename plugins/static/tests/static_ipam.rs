//! `static` side by side with the reference (/usr/lib/cni/static, v1.1.1) in every CNI version
//! both support, the verbs only Berth has (1.1.0), bad input, and `static` as the IPAM plugin
//! of Berth's `bridge`, `veth` and `macvlan` (the address must end up in the container).

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::path::{Path, PathBuf};

use ipnetwork::{Ipv4Network, Ipv6Network};
use netns_fixtures::{
    CniCall, HostAndContainer, PluginOutput, bin, require_root, test_subnet_v4, test_subnet_v6,
    unique_name,
};
use serde_json::{Value, json};

const REFERENCE: &str = "/usr/lib/cni/static";
/// The versions the reference supports (from 0.3.0 on, as Berth).
const SHARED_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

fn ours() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_static"))
}

fn reference() -> &'static Path {
    let p = Path::new(REFERENCE);
    assert!(
        p.exists(),
        "{REFERENCE} missing: install containernetworking-plugins"
    );
    p
}

/// Where our plugins are: the CNI_PATH of delegation tests.
fn plugin_dir() -> PathBuf {
    bin("static").parent().unwrap().to_path_buf()
}

fn call(bin: &Path, env: &HostAndContainer, command: &str, cni_args: &str) -> CniCall {
    let mut c = CniCall::new(bin)
        .command(command)
        .container_id("static-1")
        .netns(env.ctr.path())
        .ifname("eth0")
        .path(&[&plugin_dir()]);
    if !cni_args.is_empty() {
        c = c.args(cni_args);
    }
    c
}

fn run(
    bin: &Path,
    env: &HostAndContainer,
    command: &str,
    cni_args: &str,
    conf: &Value,
) -> PluginOutput {
    call(bin, env, command, cni_args)
        .stdin_json(conf)
        .run_in(&env.host)
        .unwrap()
}

fn code(out: &PluginOutput) -> u64 {
    assert!(!out.success(), "expected a failure: {out:?}");
    out.json().unwrap()["code"].as_u64().unwrap()
}

fn host(net: Ipv4Network, n: u32) -> String {
    net.nth(n).unwrap().to_string()
}

fn cidr4(net: Ipv4Network, n: u32) -> String {
    format!("{}/{}", host(net, n), net.prefix())
}

fn cidr6(net: Ipv6Network, n: u128) -> String {
    format!(
        "{}/{}",
        std::net::Ipv6Addr::from(u128::from(net.network()) + n),
        net.prefix()
    )
}

fn ip6(net: Ipv6Network, n: u128) -> String {
    std::net::Ipv6Addr::from(u128::from(net.network()) + n).to_string()
}

fn conf(version: &str, ipam: Value) -> Value {
    json!({"cniVersion": version, "name": "static-net", "type": "bridge", "ipam": ipam})
}

/// Everything the `ipam` section can hold: dual-stack addresses, a gateway outside its subnet,
/// an IPv4-mapped address, routes with and without `gw` and with host bits, full DNS.
fn full_ipam(v4: Ipv4Network, other: Ipv4Network, v6: Ipv6Network) -> Value {
    json!({"type": "static",
        "addresses": [
            {"address": cidr4(v4, 10), "gateway": host(v4, 1)},
            {"address": cidr6(v6, 10), "gateway": ip6(v6, 1)},
            {"address": cidr4(v4, 11), "gateway": host(other, 1)},
            {"address": format!("::ffff:{}/120", host(v4, 12))},
            {"address": cidr4(other, 13), "gateway": ""}
        ],
        "routes": [
            {"dst": "0.0.0.0/0"},
            {"dst": other.to_string(), "gw": host(v4, 1)},
            {"dst": "::/0", "gw": ip6(v6, 1)},
            {"dst": cidr4(other, 77)}
        ],
        "dns": {"nameservers": [host(v4, 53)], "domain": "example.test",
                "search": ["a.example.test", "example.test"], "options": ["ndots:2"]}})
}

/// Each case: a name, its CNI_ARGS and its configuration (its `cniVersion` is set per run).
fn cases(
    v4: Ipv4Network,
    other: Ipv4Network,
    v6: Ipv6Network,
) -> Vec<(&'static str, String, Value)> {
    let small = conf(
        "",
        json!({"type": "static",
            "addresses": [{"address": cidr4(v4, 20), "gateway": host(v4, 1)}],
            "routes": [{"dst": "0.0.0.0/0"}]}),
    );
    let mut with_args = small.clone();
    with_args["args"] = json!({"cni": {"ips": [cidr4(other, 5), cidr6(v6, 5)]}});
    let mut with_runtime = with_args.clone();
    with_runtime["runtimeConfig"] = json!({"ips": [cidr4(other, 6)]});
    let cni_args = format!(
        "IgnoreUnknown=1;K8S_POD_NAME=p;IP={},{};GATEWAY={}",
        cidr4(other, 30),
        cidr6(v6, 30),
        host(other, 1)
    );
    vec![
        (
            "ipam section",
            String::new(),
            conf("", full_ipam(v4, other, v6)),
        ),
        ("CNI_ARGS IP and GATEWAY", cni_args, small),
        (
            "args.cni.ips replaces the rest",
            format!("IP={}", cidr4(v4, 40)),
            with_args,
        ),
        (
            "runtimeConfig.ips wins over args.cni.ips",
            String::new(),
            with_runtime,
        ),
        (
            "empty ipam section",
            String::new(),
            conf("", json!({"type": "static"})),
        ),
    ]
}

#[test]
fn same_result_as_the_reference_in_every_version() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let (v4, other, v6) = (test_subnet_v4(), test_subnet_v4(), test_subnet_v6());
    for (name, cni_args, case) in cases(v4, other, v6) {
        let conf_of = |version: &str| {
            let mut c = case.clone();
            c["cniVersion"] = version.into();
            c
        };
        for version in SHARED_VERSIONS {
            let conf = conf_of(version);
            let theirs = run(reference(), &env, "ADD", &cni_args, &conf).expect_success();
            let mine = run(ours(), &env, "ADD", &cni_args, &conf).expect_success();
            assert_eq!(mine, theirs, "{name}, {version}");
            assert_eq!(mine["cniVersion"], version);
        }
        // 1.1.0 (ours only): the 1.0.0 result under another version.
        let mut mine = run(ours(), &env, "ADD", &cni_args, &conf_of("1.1.0")).expect_success();
        let mut theirs =
            run(reference(), &env, "ADD", &cni_args, &conf_of("1.0.0")).expect_success();
        mine["cniVersion"] = Value::Null;
        theirs["cniVersion"] = Value::Null;
        assert_eq!(mine, theirs, "{name}, 1.1.0");
    }
}

#[test]
fn route_attributes_of_1_1_are_passed_on_in_1_1_only() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let v4 = test_subnet_v4();
    let ipam = json!({"type": "static", "addresses": [{"address": cidr4(v4, 2)}],
        "routes": [{"dst": "0.0.0.0/0", "gw": host(v4, 1), "mtu": 1400, "advmss": 1360,
                    "priority": 10, "table": 100, "scope": 0}]});
    let r11 = run(ours(), &env, "ADD", "", &conf("1.1.0", ipam.clone())).expect_success();
    assert_eq!(
        r11["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": host(v4, 1), "mtu": 1400, "advmss": 1360,
               "priority": 10, "table": 100, "scope": 0})
    );
    let r10 = run(ours(), &env, "ADD", "", &conf("1.0.0", ipam)).expect_success();
    assert_eq!(
        r10["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": host(v4, 1)})
    );
}

#[test]
fn bad_input_gets_the_reference_code_or_the_documented_one() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let v4 = test_subnet_v4();
    let with_ipam = |key: &str, value: Value| {
        let mut ipam = json!({"type": "static", "addresses": [{"address": cidr4(v4, 2)}]});
        ipam[key] = value;
        conf("1.0.0", ipam)
    };
    let good = with_ipam("type", "static".into());
    let with_top = |key: &str, value: Value| {
        let mut c = good.clone();
        c[key] = value;
        c
    };
    let mut no_ipam = good.clone();
    no_ipam.as_object_mut().unwrap().remove("ipam");
    let mut no_name = good.clone();
    no_name.as_object_mut().unwrap().remove("name");
    let one = |a: Value| with_ipam("addresses", json!([a]));
    // (what, CNI_ARGS, configuration, reference's code, ours). Where they differ, the reference
    // answers 999 for a configuration error and Berth the spec's 7 (or 6 for a wrong JSON type,
    // as berth-cni does everywhere): see README.
    let (no_prefix_arg, bad_gateway_arg) = (
        format!("IP={}", host(v4, 3)),
        format!("IP={};GATEWAY=zz", cidr4(v4, 3)),
    );
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, Value, u64, u64)> = vec![
        ("bad CIDR", "", one(json!({"address": "198.18.300.1/24"})), 999, 7),
        ("address without prefix", "", one(json!({"address": host(v4, 2)})), 999, 7),
        ("empty address", "", one(json!({"gateway": host(v4, 1)})), 999, 7),
        ("gateway not an IP", "", one(json!({"address": cidr4(v4, 2), "gateway": "zz"})), 999, 7),
        ("route dst without prefix", "", with_ipam("routes", json!([{"dst": host(v4, 0)}])), 999, 7),
        ("route gw not an IP", "", with_ipam("routes", json!([{"dst": "0.0.0.0/0", "gw": "x"}])), 999, 7),
        ("CNI_ARGS IP without prefix", &no_prefix_arg, good.clone(), 999, 7),
        ("CNI_ARGS GATEWAY not an IP", &bad_gateway_arg, good.clone(), 999, 7),
        ("args.cni.ips without prefix", "", with_top("args", json!({"cni": {"ips": [host(v4, 3)]}})), 999, 7),
        ("runtimeConfig.ips without prefix", "", with_top("runtimeConfig", json!({"ips": [host(v4, 3)]})), 999, 7),
        ("no ipam section", "", no_ipam, 999, 7),
        ("address of the wrong JSON type", "", one(json!({"address": 5})), 999, 6),
        ("unknown cniVersion", "", with_top("cniVersion", "0.9.0".into()), 1, 1),
        ("no network name", "", no_name, 7, 7),
    ];
    for (what, cni_args, conf, theirs, mine) in cases {
        assert_eq!(
            code(&run(reference(), &env, "ADD", cni_args, &conf)),
            theirs,
            "reference: {what}"
        );
        assert_eq!(
            code(&run(ours(), &env, "ADD", cni_args, &conf)),
            mine,
            "ours: {what}"
        );
    }
    // Malformed JSON: 6 for both.
    for bin in [reference(), ours()] {
        let out = call(bin, &env, "ADD", "")
            .stdin("{\"cniVersion\": ")
            .run_in(&env.host)
            .unwrap();
        assert_eq!(code(&out), 6, "{}", bin.display());
    }
}

#[test]
fn del_check_status_gc_in_every_version() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let v4 = test_subnet_v4();
    let ipam = json!({"type": "static",
        "addresses": [{"address": cidr4(v4, 2), "gateway": host(v4, 1)}]});
    for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let conf = conf(version, ipam.clone());
        let result = run(ours(), &env, "ADD", "", &conf).expect_success();
        let mut with_prev = conf.clone();
        with_prev["prevResult"] = result.clone();
        // DEL: nothing to release, twice, and even for a configuration that no longer parses.
        for _ in 0..2 {
            assert_eq!(
                run(ours(), &env, "DEL", "", &with_prev).expect_success(),
                Value::Null
            );
        }
        let broken = self::conf(
            version,
            json!({"type": "static", "addresses": [{"address": "x"}]}),
        );
        run(ours(), &env, "DEL", "", &broken).expect_success();
        let del = call(ours(), &env, "DEL", "")
            .env_remove("CNI_NETNS")
            .stdin_json(&conf);
        assert!(
            del.run_in(&env.host).unwrap().success(),
            "DEL without CNI_NETNS"
        );

        let check = run(ours(), &env, "CHECK", "", &with_prev);
        let status = run(ours(), &env, "STATUS", "", &conf);
        let mut gc_conf = conf.clone();
        gc_conf["cni.dev/valid-attachments"] = json!([]);
        let gc = run(ours(), &env, "GC", "", &gc_conf);
        if version == "1.1.0" {
            check.expect_success();
            status.expect_success();
            gc.expect_success();
        } else {
            assert_eq!(code(&status), 1, "STATUS in {version}");
            assert_eq!(code(&gc), 1, "GC in {version}");
            if version.starts_with("0.3") {
                assert_eq!(code(&check), 1, "CHECK in {version}");
            } else {
                check.expect_success();
            }
        }
        if version.starts_with("0.3") {
            continue;
        }
        // CHECK: a prevResult without our address, or with another gateway, fails; the
        // reference passes the first (it only compares gateways of addresses it finds).
        let mut lacking = with_prev.clone();
        lacking["prevResult"]["ips"][0]["address"] = cidr4(v4, 3).into();
        assert_eq!(
            code(&run(ours(), &env, "CHECK", "", &lacking)),
            999,
            "{version}"
        );
        let mut other_gw = with_prev.clone();
        other_gw["prevResult"]["ips"][0]["gateway"] = host(v4, 254).into();
        assert_eq!(
            code(&run(ours(), &env, "CHECK", "", &other_gw)),
            999,
            "{version}"
        );
        if version != "1.1.0" {
            assert_eq!(code(&run(reference(), &env, "CHECK", "", &other_gw)), 999);
            run(reference(), &env, "CHECK", "", &lacking).expect_success();
            run(reference(), &env, "CHECK", "", &with_prev).expect_success();
        }
        let mut no_prev = conf.clone();
        no_prev.as_object_mut().unwrap().remove("prevResult");
        assert!(!run(ours(), &env, "CHECK", "", &no_prev).success());
    }
    let version = call(ours(), &env, "VERSION", "").stdin("{\"cniVersion\":\"1.1.0\"}");
    let out = version.run_in(&env.host).unwrap().expect_success();
    assert_eq!(
        out["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

/// Go's encoding/json matches keys case-insensitively, so the reference accepts these
/// (berth-cni's `gojson` does the same, at every depth).
#[test]
fn keys_in_other_cases_give_the_reference_result() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let v4 = test_subnet_v4();
    let nested = json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "static",
        "Addresses": [{"address": cidr4(v4, 2), "Gateway": host(v4, 1)}],
        "ROUTES": [{"Dst": "0.0.0.0/0", "GW": host(v4, 1)}],
        "DNS": {"Nameservers": [host(v4, 53)], "Domain": "example.test"}}});
    let theirs = run(reference(), &env, "ADD", "", &nested).expect_success();
    assert_eq!(
        theirs["ips"][0]["gateway"],
        host(v4, 1),
        "the reference reads them"
    );
    assert_eq!(
        run(ours(), &env, "ADD", "", &nested).expect_success(),
        theirs
    );
}

#[test]
fn top_level_keys_in_other_cases_give_the_reference_result() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let (v4, v6) = (test_subnet_v4(), test_subnet_v6());
    let top = json!({"cniVersion": "1.0.0", "name": "n",
        "IPAM": {"type": "static", "addresses": [{"address": cidr4(v4, 2)}]},
        "Args": {"CNI": {"IPs": [cidr6(v6, 7)]}},
        "RuntimeConfig": {"IPs": [cidr4(v4, 9)]}});
    let theirs = run(reference(), &env, "ADD", "", &top).expect_success();
    assert_eq!(theirs["ips"], json!([{"address": cidr4(v4, 9)}]));
    assert_eq!(run(ours(), &env, "ADD", "", &top).expect_success(), theirs);
}

/// `ip -o addr` of the container's eth0.
fn ctr_addresses(env: &HostAndContainer) -> String {
    env.ctr.ip(&["-o", "addr", "show", "dev", "eth0"]).unwrap()
}

/// One main plugin with `"ipam": {"type": "static", ...}`: ADD puts the address in the
/// container (checked with `ip addr`), CHECK passes, DEL removes the interface.
fn delegate(main: &str, extra: Value, address: &str, gateway: &str) -> Result<(), String> {
    let env = HostAndContainer::new().unwrap();
    let mut conf = json!({"cniVersion": "1.0.0", "name": format!("static-{main}"), "type": main,
        "ipam": {"type": "static", "addresses": [{"address": address, "gateway": gateway}],
                 "routes": [{"dst": "0.0.0.0/0"}]}});
    for (k, v) in extra.as_object().unwrap() {
        conf[k] = v.clone();
    }
    if let Some(master) = conf.get("master").and_then(Value::as_str) {
        let peer = unique_name("smp");
        env.host
            .ip(&["link", "add", master, "type", "veth", "peer", "name", &peer])
            .unwrap();
        env.host.ip(&["link", "set", master, "up"]).unwrap();
    }
    let bin = bin(main);
    let add = run(&bin, &env, "ADD", "", &conf);
    if !add.success() {
        return Err(format!("{main} ADD failed: {add:?}"));
    }
    let result = add.expect_success();
    let addrs = ctr_addresses(&env);
    assert!(
        addrs.contains(&format!("inet {address}")),
        "{main}: {addrs}"
    );
    let routes = env.ctr.ip(&["route", "show", "default"]).unwrap();
    assert!(
        routes.contains(&format!("via {gateway}")),
        "{main}: {routes}"
    );
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = result;
    run(&bin, &env, "CHECK", "", &with_prev).expect_success();
    run(&bin, &env, "DEL", "", &with_prev).expect_success();
    assert!(
        env.ctr.ip(&["link", "show", "eth0"]).is_err(),
        "{main}: eth0 left after DEL"
    );
    Ok(())
}

#[test]
fn delegate_of_bridge_veth_and_macvlan() {
    require_root();
    let v4 = test_subnet_v4();
    let bridge = json!({"bridge": unique_name("sbr"), "isGateway": true});
    delegate("bridge", bridge, &cidr4(v4, 2), &host(v4, 1)).unwrap();
    let v4 = test_subnet_v4();
    delegate("veth", json!({}), &cidr4(v4, 2), &host(v4, 1)).unwrap();
    let v4 = test_subnet_v4();
    let macvlan = json!({"master": unique_name("smv"), "mode": "bridge"});
    delegate("macvlan", macvlan, &cidr4(v4, 2), &host(v4, 1)).unwrap();
}
