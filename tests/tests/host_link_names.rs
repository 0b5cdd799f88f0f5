//! The host end of an attachment's veth is named by one function for `bridge` and `veth`
//! (`berth_cni::HostLinkName`). When its first name is already held by another link — a hash
//! collision with another attachment, or a stranger's link — ADD takes the next candidate,
//! and CHECK and DEL find the attachment's own link by its alias, leaving the other alone.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::path::PathBuf;

use berth_cni::HostLinkName;
use netns_fixtures::{
    CniCall, HostAndContainer, PluginOutput, TestNetns, bin, require_root, test_subnet_v4,
    unique_name,
};
use serde_json::{Value, json};

fn plugin_dir() -> PathBuf {
    bin("host-local").parent().unwrap().to_owned()
}

fn call(env: &HostAndContainer, plugin: &str, verb: &str, conf: &Value) -> PluginOutput {
    CniCall::new(bin(plugin))
        .command(verb)
        .container_id("ctr-collide")
        .netns(env.ctr.path())
        .ifname("eth0")
        .path(&[&plugin_dir()])
        .stdin_json(conf)
        .run_in(&env.host)
        .unwrap()
}

fn with_prev(conf: &Value, result: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = result.clone();
    c
}

/// A veth pair in the host namespace holding `name`, with `alias` when given.
fn squat(host: &TestNetns, name: &str, alias: Option<&str>) {
    let peer = unique_name("sq");
    host.ip(&["link", "add", name, "type", "veth", "peer", "name", &peer])
        .unwrap();
    if let Some(alias) = alias {
        host.ip(&["link", "set", name, "alias", alias]).unwrap();
    }
}

fn exists(host: &TestNetns, name: &str) -> bool {
    host.netlink().link_by_name(name).unwrap().is_some()
}

#[test]
fn a_taken_first_name_moves_the_host_end_to_the_next_and_del_spares_the_other() {
    require_root();
    let subnet = test_subnet_v4();
    for (plugin, extra) in [
        (
            "bridge",
            json!({"bridge": unique_name("hb"), "isGateway": true}),
        ),
        ("veth", json!({})),
    ] {
        let env = HostAndContainer::new().unwrap();
        let network = format!("collide-{plugin}");
        let names = HostLinkName::of(&network, "ctr-collide", "eth0");
        // Another attachment's link under our first name (its alias is another owner's), and
        // a stranger's unmarked link under our second.
        let other = HostLinkName::of("other-net", "other-ctr", "eth0");
        squat(&env.host, &names.candidates[0], Some(&other.alias));
        squat(&env.host, &names.candidates[1], None);

        let mut conf = json!({
            "cniVersion": "1.0.0", "name": network, "type": plugin,
            "ipam": {"type": "host-local", "subnet": subnet.to_string(), "dataDir": env.data_dir()},
        });
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let result = call(&env, plugin, "ADD", &conf).expect_success();
        let host_ifaces: Vec<&str> = result["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i.get("sandbox").is_none())
            .filter_map(|i| i["name"].as_str())
            .collect();
        assert!(
            host_ifaces.contains(&names.candidates[2].as_str()),
            "{plugin}: {result:#}"
        );
        let link = env
            .host
            .netlink()
            .link_by_name(&names.candidates[2])
            .unwrap()
            .unwrap();
        assert_eq!(
            link.alias.as_deref(),
            Some(names.alias.as_str()),
            "{plugin}"
        );

        call(&env, plugin, "CHECK", &with_prev(&conf, &result)).expect_success();
        call(&env, plugin, "DEL", &with_prev(&conf, &result)).expect_success();
        assert!(
            !exists(&env.host, &names.candidates[2]),
            "{plugin}: ours stays"
        );
        assert!(
            exists(&env.host, &names.candidates[0]),
            "{plugin}: deleted another's"
        );
        assert!(
            exists(&env.host, &names.candidates[1]),
            "{plugin}: deleted a stranger's"
        );

        // DEL with the container's namespace already gone finds nothing of ours by name
        // alone: the squatters stay.
        CniCall::new(bin(plugin))
            .command("DEL")
            .container_id("ctr-collide")
            .netns("/run/netns/does-not-exist")
            .ifname("eth0")
            .path(&[&plugin_dir()])
            .stdin_json(&conf)
            .run_in(&env.host)
            .unwrap()
            .expect_success();
        assert!(exists(&env.host, &names.candidates[0]), "{plugin}");
        assert!(exists(&env.host, &names.candidates[1]), "{plugin}");
    }
}
