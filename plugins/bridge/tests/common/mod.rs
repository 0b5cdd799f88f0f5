//! Helpers shared by the bridge plugin's test binaries.

#![allow(dead_code, clippy::unwrap_used)] // Each test binary uses a subset; panics are reports.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_netlink::{Link, Netlink};
use netns_fixtures::{CniCall, PluginOutput, TestNetns, bin, unique_name};
use serde_json::{Value, json};

pub const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

pub fn plugin() -> &'static str {
    env!("CARGO_BIN_EXE_bridge")
}

/// Where host-local lives: CNI_PATH of every call.
pub fn ipam_dir() -> PathBuf {
    bin("host-local").parent().unwrap().to_path_buf()
}

/// A network configuration on a fresh bridge: `extra` keys are merged at the top level.
pub fn conf(version: &str, bridge: &str, ipam: Value, extra: Value) -> Value {
    let mut conf = json!({
        "cniVersion": version,
        "name": format!("net-{bridge}"),
        "type": "bridge",
        "bridge": bridge,
        "ipam": ipam,
    });
    for (k, v) in extra.as_object().unwrap() {
        conf[k] = v.clone();
    }
    conf
}

/// host-local on one IPv4 subnet.
pub fn ipam_v4(subnet: impl ToString, data_dir: &Path) -> Value {
    json!({"type": "host-local", "subnet": subnet.to_string(), "dataDir": data_dir})
}

/// A unique bridge name.
pub fn bridge_name() -> String {
    unique_name("br")
}

/// One CNI call of our plugin for container `ctr` (netns `ctr_ns`), run from `host`.
pub fn call_in(
    host: &TestNetns,
    ctr_ns: &Path,
    command: &str,
    container_id: &str,
    conf: &Value,
) -> PluginOutput {
    call_with(plugin(), host, ctr_ns, command, container_id, conf, "")
}

#[allow(clippy::too_many_arguments)]
pub fn call_with(
    bin: &str,
    host: &TestNetns,
    ctr_ns: &Path,
    command: &str,
    container_id: &str,
    conf: &Value,
    cni_args: &str,
) -> PluginOutput {
    let mut call = CniCall::new(bin)
        .command(command)
        .container_id(container_id)
        .netns(ctr_ns)
        .ifname("eth0")
        .path(&[&ipam_dir()])
        .stdin_json(conf);
    if !cni_args.is_empty() {
        call = call.args(cni_args);
    }
    call.run_in(host).expect("run the plugin")
}

/// `conf` with `prevResult` set, for CHECK and DEL.
pub fn with_prev(conf: &Value, result: &Value) -> Value {
    let mut conf = conf.clone();
    conf["prevResult"] = result.clone();
    conf
}

/// `busybox ping` from inside `ns`, a few attempts (the first packets may wait for neighbour
/// resolution). IPv6 addresses use `ping6`.
pub fn ping(ns: &TestNetns, addr: &str) -> bool {
    let applet = if addr.contains(':') { "ping6" } else { "ping" };
    (0..3).any(|_| {
        ns.output(Command::new("busybox").args([applet, "-c1", "-W1", addr]))
            .unwrap()
            .status
            .success()
    })
}

/// One `ping -c1 -W1`: for "must not reach" assertions (no retries needed, 1 s), and for
/// "usable at once".
pub fn ping_once(ns: &TestNetns, addr: &str) -> bool {
    let applet = if addr.contains(':') { "ping6" } else { "ping" };
    ns.output(Command::new("busybox").args([applet, "-c1", "-W1", addr]))
        .unwrap()
        .status
        .success()
}

pub fn veths(nl: &Netlink) -> Vec<Link> {
    nl.links()
        .unwrap()
        .into_iter()
        .filter(|l| l.kind.as_deref() == Some("veth"))
        .collect()
}

/// IPAM reservations left in `data_dir`: every file but `lock` (and the allocation hint).
pub fn reservations(data_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(networks) = std::fs::read_dir(data_dir) else {
        return out;
    };
    for net in networks {
        let net = net.unwrap().path();
        // `.berth-keys`: host-local's key index (gone with the last reservation), not a
        // network; network names never start with a dot.
        if net
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        for f in std::fs::read_dir(&net).unwrap() {
            let name = f.unwrap().file_name().to_string_lossy().into_owned();
            if name != "lock" && !name.starts_with("last_reserved_ip") {
                out.push(format!("{}/{name}", net.display()));
            }
        }
    }
    out
}

/// The host namespace's firewall state, both front ends, for "no rules of ours" assertions.
pub fn ruleset(host: &TestNetns) -> String {
    let mut text = String::new();
    for cmd in [
        vec!["iptables-save"],
        vec!["ip6tables-save"],
        vec!["nft", "list", "ruleset"],
    ] {
        let out = host.output(Command::new(cmd[0]).args(&cmd[1..])).unwrap();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    text
}

/// The addresses (`a.b.c.d/nn`) of a result's `ips`.
pub fn result_addrs(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .map(|ips| {
            ips.iter()
                .map(|ip| ip["address"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The bare address of `ips[i]`.
pub fn ip_of(result: &Value, i: usize) -> String {
    result_addrs(result)[i]
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

pub fn link(nl: &Netlink, name: &str) -> Link {
    nl.link_by_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("no link {name} in {}", nl.netns()))
}
