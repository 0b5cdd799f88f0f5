//! Shared by the veth test binaries: configurations, plugin calls, probes of what is left.

#![allow(dead_code)] // Each test binary uses a different subset.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_netlink::{IpFamily, Netlink};
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use netns_fixtures::{CniCall, HostAndContainer, PluginOutput, TestNetns, bin};
use serde_json::{Value, json};

pub const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

pub fn veth() -> &'static str {
    env!("CARGO_BIN_EXE_veth")
}

/// Where our `host-local` is (the same target directory): the CNI_PATH of our plugin.
pub fn plugin_dir() -> PathBuf {
    bin("host-local").parent().unwrap().to_path_buf()
}

/// A dual-stack (or IPv4-only) host-local `ipam` section with default routes.
pub fn ipam(data_dir: &Path, v4: Ipv4Network, v6: Option<Ipv6Network>) -> Value {
    let mut ranges = vec![json!([{"subnet": v4.to_string()}])];
    let mut routes = vec![json!({"dst": "0.0.0.0/0"})];
    if let Some(v6) = v6 {
        ranges.push(json!([{"subnet": v6.to_string()}]));
        routes.push(json!({"dst": "::/0"}));
    }
    json!({"type": "host-local", "ranges": ranges, "routes": routes,
        "dataDir": data_dir.display().to_string()})
}

/// A host-mode configuration (ptp's keys).
pub fn host_conf(version: &str, network: &str, ipam: Value) -> Value {
    json!({"cniVersion": version, "name": network, "type": "veth", "ipam": ipam})
}

/// A call of our plugin for container `id` (netns `netns`, interface `ifname`), run in `host`.
pub fn call(
    host: &TestNetns,
    command: &str,
    id: &str,
    netns: Option<&Path>,
    ifname: &str,
    conf: &Value,
) -> PluginOutput {
    let mut c = CniCall::new(veth())
        .command(command)
        .container_id(id)
        .ifname(ifname)
        .path(&[&plugin_dir()])
        .stdin_json(conf);
    if let Some(netns) = netns {
        c = c.netns(netns);
    }
    c.run_in(host).unwrap()
}

/// [`call`] for the usual container: id `c1`, `eth0` in `env.ctr`.
pub fn call_ctr(env: &HostAndContainer, command: &str, conf: &Value) -> PluginOutput {
    call(&env.host, command, "c1", Some(env.ctr.path()), "eth0", conf)
}

/// `conf` with `prevResult` set, for CHECK and DEL.
pub fn with_prev(conf: &Value, result: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = result.clone();
    c
}

/// One ICMP echo from inside `from`, one second at most.
pub fn ping(from: &TestNetns, to: IpAddr) -> bool {
    ping_sized(from, to, 56)
}

pub fn ping_sized(from: &TestNetns, to: IpAddr, size: u32) -> bool {
    let out = from
        .output(Command::new("busybox").args([
            "ping",
            "-c1",
            "-W1",
            "-s",
            &size.to_string(),
            &to.to_string(),
        ]))
        .unwrap();
    out.status.success()
}

/// The addresses of `result` (in order), parsed.
pub fn result_ips(result: &Value) -> Vec<IpNetwork> {
    result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| ip["address"].as_str().unwrap().parse().unwrap())
        .collect()
}

pub fn error_code(out: &PluginOutput) -> u64 {
    assert!(!out.success(), "expected a failure: {out:?}");
    out.json().unwrap()["code"].as_u64().unwrap()
}

pub fn error_text(out: &PluginOutput) -> String {
    let err = out.json().unwrap();
    format!(
        "{} {}",
        err["msg"].as_str().unwrap_or(""),
        err["details"].as_str().unwrap_or("")
    )
}

/// Names of the links of a namespace other than `lo`.
pub fn links(nl: &Netlink) -> Vec<String> {
    nl.links()
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .filter(|n| n != "lo")
        .collect()
}

/// Every route of the main tables but `lo`'s (`::1`), as text: after a full DEL the host has
/// none left.
pub fn routes(nl: &Netlink) -> Vec<String> {
    let lo = nl.link_by_name("lo").unwrap().map(|l| l.index);
    [IpFamily::V4, IpFamily::V6]
        .into_iter()
        .flat_map(|f| nl.routes(f, None).unwrap())
        .filter(|r| r.oif != lo)
        .map(|r| r.to_string())
        .collect()
}

/// The files under an IPAM `dataDir`, by name; only `lock` may survive a DEL.
pub fn ipam_files(data_dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(data_dir, &mut out);
    out.sort();
    out
}

/// Masquerade rules in `ns` (either backend: iptables-nft rules are nft rules too).
pub fn masquerade_rules(ns: &TestNetns) -> Vec<String> {
    let out = ns
        .output(Command::new("nft").args(["list", "ruleset"]))
        .unwrap();
    assert!(out.status.success(), "nft list ruleset: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("masquerade") || l.contains("MASQUERADE"))
        .map(str::to_owned)
        .collect()
}

/// Nothing of ours is left: no links or routes in the host, no links in the containers, no
/// IPAM state but the lock, no masquerade rules.
pub fn assert_clean(host: &TestNetns, containers: &[&TestNetns], data_dir: &Path) {
    assert_eq!(
        links(host.netlink()),
        Vec::<String>::new(),
        "links left in the host"
    );
    assert_eq!(
        routes(host.netlink()),
        Vec::<String>::new(),
        "routes left in the host"
    );
    for ctr in containers {
        assert_eq!(
            links(ctr.netlink()),
            Vec::<String>::new(),
            "links left in {}",
            ctr.name()
        );
    }
    let files = ipam_files(data_dir);
    assert!(
        files.iter().all(|f| f == "lock"),
        "IPAM files left: {files:?}"
    );
    assert_eq!(
        masquerade_rules(host),
        Vec::<String>::new(),
        "rules left in the host"
    );
}

/// The n-th address of a subnet (1 = first host).
pub fn nth_v4(net: Ipv4Network, n: u32) -> IpAddr {
    IpAddr::V4(net.nth(n).unwrap())
}

pub fn nth_v6(net: Ipv6Network, n: u128) -> IpAddr {
    IpAddr::V6((u128::from(net.network()) + n).into())
}
