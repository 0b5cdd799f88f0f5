//! Issue 11, finding 2: `CNI_IFNAME='%d'` or `'veth%d'` reached the kernel, which expanded the
//! template into a name of its own choosing; `veth` ADD then failed and left the pair behind
//! (`veth60cda68d` on the host, `0`/`veth0` in the container). Names are now checked against the
//! kernel's rules before any netlink call, for `CNI_IFNAME` and for names from configurations.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use netns_fixtures::{CniCall, HostAndContainer, TestNetns, bin, require_root, test_subnet_v4};
use serde_json::{Value, json};

fn links(ns: &TestNetns) -> Vec<String> {
    let mut names: Vec<String> = ns
        .netlink()
        .links()
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    names.sort();
    names
}

fn add(env: &HostAndContainer, plugin: &str, ifname: &str, conf: &Value) -> Value {
    let out = CniCall::new(bin(plugin))
        .command("ADD")
        .container_id("ctr-names")
        .netns(env.ctr.path())
        .ifname(ifname)
        .path(&[bin("host-local").parent().unwrap()])
        .stdin_json(conf)
        .run_in(&env.host)
        .unwrap();
    assert!(
        !out.success(),
        "{plugin} ADD with ifname {ifname:?} succeeded"
    );
    out.json().unwrap()
}

#[test]
fn template_and_invalid_names_never_reach_the_kernel() {
    require_root();
    let subnet = test_subnet_v4();
    for plugin in ["veth", "bridge", "macvlan", "loopback"] {
        for ifname in ["%d", "veth%d", "a b", "a:b", ".."] {
            let env = HostAndContainer::new().unwrap();
            let conf = json!({"cniVersion": "1.0.0", "name": "names", "type": plugin,
                "bridge": "brnames", "master": "lo",
                "ipam": {"type": "host-local", "subnet": subnet.to_string(),
                         "dataDir": env.data_dir()}});
            let (host_before, ctr_before) = (links(&env.host), links(&env.ctr));
            let err = add(&env, plugin, ifname, &conf);
            assert_eq!(err["code"], 4, "{plugin} {ifname:?}: {err}");
            assert_eq!(links(&env.host), host_before, "{plugin} {ifname:?}: host");
            assert_eq!(
                links(&env.ctr),
                ctr_before,
                "{plugin} {ifname:?}: container"
            );
        }
    }
}

#[test]
fn a_template_in_a_configured_name_is_refused_before_anything_is_made() {
    require_root();
    let subnet = test_subnet_v4();
    let env = HostAndContainer::new().unwrap();
    let conf = json!({"cniVersion": "1.0.0", "name": "names", "type": "bridge",
        "bridge": "br%d", "isGateway": true,
        "ipam": {"type": "host-local", "subnet": subnet.to_string(), "dataDir": env.data_dir()}});
    let (host_before, ctr_before) = (links(&env.host), links(&env.ctr));
    let err = add(&env, "bridge", "eth0", &conf);
    assert!(
        err["msg"].as_str().unwrap().contains("br%d")
            || err["details"].as_str().unwrap_or_default().contains("br%d"),
        "{err}"
    );
    assert_eq!(links(&env.host), host_before);
    assert_eq!(links(&env.ctr), ctr_before);
    let left: Vec<_> = std::fs::read_dir(env.data_dir().join("names"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.iter().all(|n| n == "lock"),
        "IPAM reservation left: {left:?}"
    );
}

/// Found by berth-fuzz: an interface name the kernel takes (here with a zero-width space)
/// passed berth-cni's check and the kernel, then failed in the firewall after the veth was
/// made. One rule decides: any name the kernel takes works through the firewall too (the
/// rule comments escape what they cannot hold).
#[test]
fn every_name_the_kernel_takes_works_through_the_firewall() {
    require_root();
    let subnet = test_subnet_v4();
    let ifname = "eth0\u{200b}";
    let env = HostAndContainer::new().unwrap();
    let mut conf = json!({"cniVersion": "1.0.0", "name": "names", "type": "bridge",
        "bridge": netns_fixtures::unique_name("bn"), "isGateway": true, "ipMasq": true,
        "macspoofchk": true,
        "ipam": {"type": "host-local", "subnet": subnet.to_string(), "dataDir": env.data_dir()}});
    let call = |verb: &str, conf: &Value| {
        CniCall::new(bin("bridge"))
            .command(verb)
            .container_id("ctr-zw")
            .netns(env.ctr.path())
            .ifname(ifname)
            .path(&[bin("host-local").parent().unwrap()])
            .stdin_json(conf)
            .run_in(&env.host)
            .unwrap()
    };
    let result = call("ADD", &conf).expect_success();
    assert!(env.ctr.netlink().link_by_name(ifname).unwrap().is_some());
    conf["prevResult"] = result;
    call("CHECK", &conf).expect_success();
    call("DEL", &conf).expect_success();
    let rules = String::from_utf8_lossy(
        &env.host
            .output(&mut std::process::Command::new("iptables-save"))
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!rules.contains("ctr-zw"), "rules left:\n{rules}");
}
