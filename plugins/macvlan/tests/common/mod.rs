//! Helpers shared by the macvlan plugin's test binaries: a fake host with a parent link, the
//! two implementations (ours and the reference), and snapshots of what a container holds.

#![allow(dead_code, clippy::unwrap_used)] // Each test binary uses a subset; panics are reports.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_netlink::{IpFamily, Netlink, format_mac};
use netns_fixtures::{CniCall, HostAndContainer, PluginOutput, TestNetns, bin, unique_name};
use serde_json::{Value, json};

/// The versions the reference supports; ours adds 1.1.0.
pub const REFERENCE_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// The parent's MTU: below the kernel default, so `mtu` above it is refused and an unset `mtu`
/// visibly inherits it.
pub const PARENT_MTU: u32 = 1400;

/// One implementation of the plugin and the directory of its IPAM plugins (CNI_PATH).
#[derive(Debug, Clone)]
pub struct Impl {
    pub name: &'static str,
    pub bin: PathBuf,
    pub cni_path: PathBuf,
}

pub fn ours() -> Impl {
    Impl {
        name: "ours",
        bin: PathBuf::from(env!("CARGO_BIN_EXE_macvlan")),
        cni_path: bin("host-local").parent().unwrap().to_path_buf(),
    }
}

pub fn reference() -> Impl {
    let bin = Path::new(REFERENCE_DIR).join("macvlan");
    assert!(
        bin.exists(),
        "{} missing: install containernetworking-plugins",
        bin.display()
    );
    Impl {
        name: "reference",
        bin,
        cni_path: REFERENCE_DIR.into(),
    }
}

/// A fake host whose `parent` is a veth end (its peer `peer` up beside it, so the parent has a
/// carrier), and a container namespace.
pub struct World {
    pub env: HostAndContainer,
    pub parent: String,
    pub peer: String,
}

impl World {
    pub fn new() -> World {
        let env = HostAndContainer::new().unwrap();
        let (parent, peer) = (unique_name("mv"), unique_name("mvp"));
        env.host
            .ip(&[
                "link", "add", &parent, "type", "veth", "peer", "name", &peer,
            ])
            .unwrap();
        env.host
            .ip(&["link", "set", &parent, "mtu", &PARENT_MTU.to_string(), "up"])
            .unwrap();
        env.host.ip(&["link", "set", &peer, "up"]).unwrap();
        World { env, parent, peer }
    }

    /// The parent is a Linux bridge (with one veth port for a carrier).
    pub fn with_bridge_parent() -> World {
        let env = HostAndContainer::new().unwrap();
        let (parent, port, peer) = (unique_name("mvb"), unique_name("mvq"), unique_name("mvp"));
        env.host
            .ip(&["link", "add", &parent, "type", "bridge"])
            .unwrap();
        env.host
            .ip(&["link", "add", &port, "type", "veth", "peer", "name", &peer])
            .unwrap();
        env.host
            .ip(&["link", "set", &port, "master", &parent, "up"])
            .unwrap();
        env.host.ip(&["link", "set", &peer, "up"]).unwrap();
        env.host.ip(&["link", "set", &parent, "up"]).unwrap();
        World { env, parent, peer }
    }

    pub fn host(&self) -> &TestNetns {
        &self.env.host
    }

    pub fn ctr(&self) -> &TestNetns {
        &self.env.ctr
    }

    pub fn data_dir(&self) -> PathBuf {
        self.env.data_dir()
    }

    /// A configuration on this world's parent with host-local on `subnet`; `extra` keys are
    /// merged at the top level (`null` removes one).
    pub fn conf(&self, version: &str, ipam: Value, extra: Value) -> Value {
        let mut conf = json!({
            "cniVersion": version,
            "name": "mvnet",
            "type": "macvlan",
            "master": self.parent,
        });
        if !ipam.is_null() {
            conf["ipam"] = ipam;
        }
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                conf.as_object_mut().unwrap().remove(k);
            } else {
                conf[k] = v.clone();
            }
        }
        conf
    }

    /// host-local on `subnet` (a string) with this world's data directory.
    pub fn ipam(&self, subnet: &str) -> Value {
        json!({"type": "host-local", "subnet": subnet, "dataDir": self.data_dir()})
    }
}

/// A CNI call of `imp` for container `id` in `ctr`, run inside `host`.
pub struct Call<'a> {
    pub imp: &'a Impl,
    pub host: &'a TestNetns,
    pub ctr: &'a Path,
    pub id: &'a str,
    pub ifname: &'a str,
    pub cni_args: &'a str,
}

impl<'a> Call<'a> {
    pub fn new(imp: &'a Impl, world: &'a World) -> Call<'a> {
        Call {
            imp,
            host: world.host(),
            ctr: world.ctr().path(),
            id: "ctr-1",
            ifname: "eth0",
            cni_args: "",
        }
    }

    pub fn run(&self, command: &str, conf: &Value) -> PluginOutput {
        let mut call = CniCall::new(&self.imp.bin)
            .command(command)
            .container_id(self.id)
            .netns(self.ctr)
            .ifname(self.ifname)
            .path(&[&self.imp.cni_path])
            .stdin_json(conf);
        if !self.cni_args.is_empty() {
            call = call.args(self.cni_args);
        }
        call.run_in(self.host).unwrap()
    }

    /// Runs and expects success; returns stdout as JSON (`Null` for an empty stdout).
    pub fn ok(&self, command: &str, conf: &Value) -> Value {
        let out = self.run(command, conf);
        assert!(
            out.success(),
            "{} {command} failed: {out:?}\nconf: {conf}",
            self.imp.name
        );
        out.expect_success()
    }

    /// Runs and expects failure; returns the error JSON.
    pub fn fail(&self, command: &str, conf: &Value) -> Value {
        let out = self.run(command, conf);
        assert!(
            !out.success(),
            "{} {command} should have failed: {out:?}\nconf: {conf}",
            self.imp.name
        );
        out.json().unwrap()
    }
}

/// `conf` with `prevResult` set, for CHECK and DEL.
pub fn with_prev(conf: &Value, result: &Value) -> Value {
    let mut conf = conf.clone();
    conf["prevResult"] = result.clone();
    conf
}

/// The links of a namespace other than `lo`, by name.
pub fn links(nl: &Netlink) -> Vec<String> {
    let mut names: Vec<String> = nl
        .links()
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    names
}

/// What a container's interface looks like to the kernel, for side-by-side comparison: kind,
/// macvlan mode, MTU, MAC (only when `with_mac`: otherwise random), up, parent, global
/// addresses, routes of the main table (without the kernel's IPv6 link-local and multicast
/// entries), and the ARP notification sysctl.
pub fn snapshot(ctr: &TestNetns, ifname: &str, with_mac: bool) -> Value {
    let nl = ctr.netlink();
    let link = nl
        .link_by_name(ifname)
        .unwrap()
        .expect("the container interface");
    let state = nl.macvlan_state(link.index).unwrap().unwrap();
    let mut addrs: Vec<String> = nl
        .addrs(Some(link.index))
        .unwrap()
        .into_iter()
        .filter(|a| !(a.net.is_ipv6() && a.net.ip().to_string().starts_with("fe80")))
        .map(|a| a.net.to_string())
        .collect();
    addrs.sort();
    let mut routes = Vec::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        for r in nl.routes(family, None).unwrap() {
            let dst = r.dst.to_string();
            if dst.starts_with("fe80") || dst.starts_with("ff00") {
                continue;
            }
            let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            let dev = if r.oif == Some(link.index) {
                ifname.to_owned()
            } else {
                format!("{:?}", r.oif)
            };
            routes.push(format!("{dst}{via} dev {dev} scope {:?}", r.scope));
        }
    }
    routes.sort();
    let arp_notify = ctr
        .output(Command::new("cat").arg(format!("/proc/sys/net/ipv4/conf/{ifname}/arp_notify")))
        .unwrap();
    json!({
        "kind": link.kind,
        "mode": state.mode.map(|m| format!("{m:?}")),
        "mtu": link.mtu,
        "mac": if with_mac { link.mac.as_ref().map(format_mac) } else { None },
        "up": link.up,
        "parent_index": link.link_index,
        "addrs": addrs,
        "routes": routes,
        "arp_notify": String::from_utf8_lossy(&arp_notify.stdout).trim(),
    })
}

/// IPAM reservations left in `data_dir`: every file but `lock` and the allocation hints (and
/// host-local's key index, a cache that goes with the last reservation).
pub fn reservations(data_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(networks) = std::fs::read_dir(data_dir) else {
        return out;
    };
    for net in networks {
        let net = net.unwrap().path();
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

/// Nothing of an attachment is left: no link but `lo` in the container (`keep` names links
/// the test put there itself), no reservation.
pub fn assert_clean(what: &str, ctr: &TestNetns, keep: &[&str], data_dir: &Path) {
    let mut expected: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(
        links(ctr.netlink()),
        expected,
        "{what}: links left in the container"
    );
    assert_eq!(
        reservations(data_dir),
        Vec::<String>::new(),
        "{what}: IPAM reservations left"
    );
}

/// The `n`th address of an IPv4 subnet given as `a.b.c.0/24`.
pub fn nth(subnet: &str, n: u8) -> String {
    let base = subnet.split('/').next().unwrap();
    let mut octets: Vec<&str> = base.split('.').collect();
    let last = n.to_string();
    octets[3] = &last;
    octets.join(".")
}
