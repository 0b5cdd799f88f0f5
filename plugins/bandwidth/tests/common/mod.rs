//! Shared by the bandwidth test binaries: a host with containers wired to it by veth pairs
//! (what a main plugin such as ptp leaves), configurations with a crafted `prevResult`, plugin
//! calls, and probes of what is left.

#![allow(dead_code)] // Each test binary uses a different subset.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_netlink::{Handle, Link};
use netns_fixtures::{CniCall, PluginOutput, TestNetns, test_subnet_v4, unique_name, wire};
use serde_json::{Value, json};

/// What the reference (Debian's containernetworking-plugins 1.1.1) supports.
pub const REFERENCE_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];
pub const REFERENCE: &str = "/usr/lib/cni/bandwidth";

pub fn ours() -> &'static str {
    env!("CARGO_BIN_EXE_bandwidth")
}

pub fn reference() -> &'static str {
    assert!(
        Path::new(REFERENCE).exists(),
        "{REFERENCE} missing: install containernetworking-plugins"
    );
    REFERENCE
}

/// The container's interface name in every test.
pub const CTR_IF: &str = "eth0";

/// A container namespace wired to the host by a veth pair: `host_if` in the host, `eth0`
/// inside, a /24 of the test range between them (host .1, container .2).
pub struct Container {
    pub ns: TestNetns,
    pub host_if: String,
    pub host_ip: Ipv4Addr,
    pub ip: Ipv4Addr,
}

/// A namespace playing the host, with one container (more with [`World::add_container`]).
pub struct World {
    pub host: TestNetns,
    pub ctr: Container,
    pub others: Vec<Container>,
}

impl World {
    /// A host and a container whose host end is named `host_if` (a fresh name when `None`),
    /// MTU `mtu` on both ends.
    pub fn new(host_if: Option<&str>, mtu: u32) -> World {
        let host = TestNetns::with_tag("h").unwrap();
        let ctr = wire_container(&host, host_if, mtu);
        World {
            host,
            ctr,
            others: Vec::new(),
        }
    }

    pub fn add_container(&mut self, mtu: u32) -> &Container {
        let ctr = wire_container(&self.host, None, mtu);
        self.others.push(ctr);
        self.others.last().unwrap()
    }

    pub fn host_link(&self, name: &str) -> Option<Link> {
        self.host.netlink().link_by_name(name).unwrap()
    }

    /// `tc <args>` in the host namespace (reading only: the plugin never runs tc).
    pub fn tc(&self, args: &[&str]) -> String {
        tc(&self.host, args)
    }

    /// What `tc` shows of the shaping of `ctr`: its host end's qdiscs and ingress filters and
    /// the qdiscs of every ifb of the host, without counters and action indexes, and without
    /// the reference's redundant second mirred action (see README).
    pub fn tc_state(&self, ctr: &Container) -> String {
        let mut out = self.tc(&["-d", "qdisc", "show", "dev", &ctr.host_if]);
        out +=
            &normalize_filters(&self.tc(&["-d", "filter", "show", "dev", &ctr.host_if, "ingress"]));
        for ifb in self.ifbs() {
            out += &self.tc(&["-d", "qdisc", "show", "dev", &ifb.name]);
        }
        out
    }

    pub fn ifbs(&self) -> Vec<Link> {
        self.host
            .netlink()
            .links()
            .unwrap()
            .into_iter()
            .filter(|l| l.kind.as_deref() == Some("ifb"))
            .collect()
    }

    /// The qdiscs on `link` other than the kernel's defaults (handle 0).
    pub fn added_qdiscs(&self, link: &str) -> Vec<String> {
        let Some(link) = self.host_link(link) else {
            return Vec::new();
        };
        self.host
            .netlink()
            .qdiscs(link.index)
            .unwrap()
            .into_iter()
            .filter(|q| q.handle != Handle::UNSPEC)
            .map(|q| format!("{} {}", q.kind, q.handle))
            .collect()
    }

    /// Nothing of the plugin's is left: no ifb in the host, no qdisc on any host end.
    pub fn assert_clean(&self) {
        let ends: Vec<&str> = std::iter::once(&self.ctr)
            .chain(&self.others)
            .map(|c| c.host_if.as_str())
            .collect();
        assert_host_clean(&self.host, &ends);
    }
}

/// No ifb in `host`, no qdisc but the kernel's defaults on the links `ends` (if they exist).
pub fn assert_host_clean(host: &TestNetns, ends: &[&str]) {
    let nl = host.netlink();
    let links = nl.links().unwrap();
    let ifbs: Vec<&str> = links
        .iter()
        .filter(|l| l.kind.as_deref() == Some("ifb"))
        .map(|l| l.name.as_str())
        .collect();
    assert!(ifbs.is_empty(), "ifb devices left: {ifbs:?}");
    for link in links.iter().filter(|l| ends.contains(&l.name.as_str())) {
        let left: Vec<String> = nl
            .qdiscs(link.index)
            .unwrap()
            .into_iter()
            .filter(|q| q.handle != Handle::UNSPEC)
            .map(|q| format!("{} {}", q.kind, q.handle))
            .collect();
        assert!(left.is_empty(), "qdiscs left on {}: {left:?}", link.name);
    }
}

fn wire_container(host: &TestNetns, host_if: Option<&str>, mtu: u32) -> Container {
    let ns = TestNetns::with_tag("c").unwrap();
    let host_if = host_if.map_or_else(|| unique_name("v"), str::to_owned);
    wire(host, &host_if, &ns, CTR_IF).unwrap();
    let net = test_subnet_v4();
    let (host_ip, ip) = (net.nth(1).unwrap(), net.nth(2).unwrap());
    let mtu = mtu.to_string();
    host.ip(&["link", "set", &host_if, "mtu", &mtu]).unwrap();
    ns.ip(&["link", "set", CTR_IF, "mtu", &mtu]).unwrap();
    host.ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_if])
        .unwrap();
    ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", CTR_IF])
        .unwrap();
    Container {
        ns,
        host_if,
        host_ip,
        ip,
    }
}

pub fn tc(ns: &TestNetns, args: &[&str]) -> String {
    let out = ns.output(Command::new("tc").args(args)).unwrap();
    assert!(out.status.success(), "tc {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Drops action indexes and any `action order 2` block (the reference's second, unreachable
/// copy of the redirect).
pub fn normalize_filters(text: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("action order ") {
            skipping = !trimmed.starts_with("action order 1:");
        } else if trimmed.is_empty() && skipping {
            // The blank line closing a skipped block goes with it.
            skipping = false;
            continue;
        }
        if skipping || trimmed.starts_with("index ") {
            continue;
        }
        out += line;
        out.push('\n');
    }
    out
}

impl Container {
    pub fn path(&self) -> PathBuf {
        self.ns.path().to_path_buf()
    }

    /// The main plugin's result for this container, in `version`: the host end without a
    /// sandbox, `eth0` in the container's namespace, its address.
    pub fn prev_result(&self, version: &str) -> Value {
        let mut ip = json!({"address": format!("{}/24", self.ip), "interface": 1});
        if version < "1.0.0" {
            ip["version"] = json!("4");
        }
        json!({
            "cniVersion": version,
            "interfaces": [
                {"name": self.host_if},
                {"name": CTR_IF, "sandbox": self.path()}
            ],
            "ips": [ip],
            "dns": {}
        })
    }
}

/// A bandwidth configuration: the spec's keys, `keys`, and `prevResult` when given.
pub fn bw_conf(version: &str, network: &str, keys: Value, prev: Option<Value>) -> Value {
    let mut c = json!({"cniVersion": version, "name": network, "type": "bandwidth"});
    for (k, v) in keys.as_object().unwrap() {
        c[k] = v.clone();
    }
    if let Some(prev) = prev {
        c["prevResult"] = prev;
    }
    c
}

/// Runs `bin` in `host` for container `id` behind `ctr` (its netns, `eth0`).
pub fn call(
    bin: &str,
    host: &TestNetns,
    command: &str,
    id: &str,
    netns: Option<&Path>,
    conf: &Value,
) -> PluginOutput {
    let mut c = CniCall::new(bin)
        .command(command)
        .container_id(id)
        .ifname(CTR_IF)
        .path(&[Path::new("/usr/lib/cni")])
        .stdin_json(conf);
    if let Some(netns) = netns {
        c = c.netns(netns);
    }
    c.run_in(host).unwrap()
}

/// [`call`] for the world's first container.
pub fn call_ctr(bin: &str, w: &World, command: &str, id: &str, conf: &Value) -> PluginOutput {
    call(bin, &w.host, command, id, Some(w.ctr.ns.path()), conf)
}

pub fn error_code(out: &PluginOutput) -> u64 {
    assert!(!out.success(), "expected a failure: {out:?}");
    out.json().unwrap()["code"].as_u64().unwrap()
}

pub fn error_msg(out: &PluginOutput) -> String {
    out.json().unwrap()["msg"].as_str().unwrap().to_owned()
}

/// Both directions limited: 20 Mbit/s in (50 000-byte bucket), 50 Mbit/s out (100 000 bytes).
pub fn both_limits() -> Value {
    json!({"ingressRate": 20_000_000, "ingressBurst": 400_000,
           "egressRate": 50_000_000, "egressBurst": 800_000})
}
