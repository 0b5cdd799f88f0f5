//! Helpers shared by the tuning plugin's test binaries: a container namespace with a veth
//! `eth0` of known MAC (what the main plugin of a chain would have made), the kernel state
//! tuning touches, and plugin calls for ours and the reference.

#![allow(dead_code, clippy::unwrap_used)] // Each test binary uses a subset; panics are reports.

use std::fs;
use std::path::{Path, PathBuf};

use berth_netlink::{Mac, VethPair, format_mac, sysctl};
use netns_fixtures::{CniCall, HostAndContainer, PluginOutput, TestNetns, unique_name};
use serde_json::{Value, json};

/// Every version the reference supports.
pub const REF_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];
/// Every version we support.
pub const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

pub const REFERENCE: &str = "/usr/lib/cni/tuning";
pub const IFNAME: &str = "eth0";
pub const CTR_MAC: Mac = [0x02, 0x42, 0xc6, 0x12, 0x00, 0x02];
const PEER_MAC: Mac = [0x02, 0x42, 0xc6, 0x12, 0x00, 0x01];
/// `sandbox` of the container interface in prevResult: data tuning passes through, the same
/// string in every world so that results compare equal.
pub const SANDBOX: &str = "/var/run/netns/tuning-test";

pub fn ours() -> &'static str {
    env!("CARGO_BIN_EXE_tuning")
}

pub fn reference() -> &'static str {
    assert!(
        Path::new(REFERENCE).exists(),
        "{REFERENCE} missing: install containernetworking-plugins"
    );
    REFERENCE
}

/// The sysctls the tests set and compare: per-namespace, per-interface and multi-valued.
pub const SYSCTLS: [&str; 4] = [
    "net/core/somaxconn",
    "net/ipv4/conf/eth0/arp_filter",
    "net/ipv4/ip_forward",
    "net/ipv4/tcp_rmem",
];

/// What tuning can change in a container namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub mac: String,
    pub mtu: u32,
    pub promisc: bool,
    pub allmulti: bool,
    pub txqlen: u32,
    pub sysctls: Vec<(String, String)>,
}

/// A host and a container namespace, with `eth0` (a veth whose peer stays in the container
/// namespace) and a unique container id.
pub struct World {
    pub env: HostAndContainer,
    pub id: String,
}

impl World {
    pub fn new() -> World {
        let env = HostAndContainer::new().unwrap();
        add_eth0(&env.ctr);
        World {
            env,
            id: unique_name("id"),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.env.data_dir()
    }

    /// A tuning configuration in `version` with `dataDir` in this world's temporary
    /// directory, `prevResult` set, and `extra` keys merged at the top level.
    pub fn conf(&self, version: &str, extra: Value) -> Value {
        let mut conf = json!({
            "cniVersion": version,
            "name": "tuning-test",
            "type": "tuning",
            "dataDir": self.data_dir(),
            "prevResult": prev_result(version),
        });
        merge(&mut conf, extra);
        conf
    }

    pub fn call(&self, bin: &str, command: &str, conf: &Value) -> PluginOutput {
        self.call_with(bin, command, conf, "", IFNAME)
    }

    pub fn call_with(
        &self,
        bin: &str,
        command: &str,
        conf: &Value,
        cni_args: &str,
        ifname: &str,
    ) -> PluginOutput {
        let mut call = CniCall::new(bin)
            .command(command)
            .container_id(&self.id)
            .netns(self.env.ctr.path())
            .ifname(ifname)
            .path(&[Path::new("/nonexistent")])
            .stdin_json(conf);
        if !cni_args.is_empty() {
            call = call.args(cni_args);
        }
        call.run_in(&self.env.host).unwrap()
    }

    pub fn kernel(&self) -> Kernel {
        kernel(&self.env.ctr)
    }

    /// Names of the files in `dataDir` (temporaries included).
    pub fn saved_files(&self) -> Vec<String> {
        files(&self.data_dir())
    }

    /// The saved-values file of this world's attachment, parsed.
    pub fn saved(&self) -> Value {
        let path = self.data_dir().join(format!("{}_{IFNAME}.json", self.id));
        serde_json::from_slice(&fs::read(&path).unwrap()).unwrap()
    }
}

/// Creates `eth0` in `ns` with a known MAC, and brings it up.
pub fn add_eth0(ns: &TestNetns) {
    let nl = ns.netlink();
    let link = nl
        .add_veth_pair(&VethPair {
            mac: Some(CTR_MAC),
            peer_mac: Some(PEER_MAC),
            ..VethPair::new(IFNAME, "peer0")
        })
        .unwrap();
    nl.set_up(link.index).unwrap();
}

pub fn kernel(ns: &TestNetns) -> Kernel {
    let link = ns.netlink().link_by_name(IFNAME).unwrap().unwrap();
    let sysctls = ns
        .run(|| {
            SYSCTLS
                .iter()
                .map(|k| (k.to_string(), sysctl::read(k).unwrap()))
                .collect()
        })
        .unwrap();
    Kernel {
        mac: format_mac(&link.mac.unwrap()),
        mtu: link.mtu,
        promisc: link.promisc,
        allmulti: link.allmulti,
        txqlen: link.txqlen,
        sysctls,
    }
}

pub fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// What a main plugin (bridge) returns for `eth0`, in `version`.
pub fn prev_result(version: &str) -> Value {
    let mut ip = json!({"address": "198.18.0.2/24", "gateway": "198.18.0.1", "interface": 2});
    if version < "1.0.0" {
        ip["version"] = "4".into();
    }
    let mut ctr = json!({"name": IFNAME, "mac": format_mac(&CTR_MAC), "sandbox": SANDBOX});
    if version == "1.1.0" {
        ctr["mtu"] = 1500.into();
    }
    json!({
        "cniVersion": version,
        "interfaces": [
            {"name": "cni-test0", "mac": "02:42:c6:12:00:fe"},
            {"name": "veth1234", "mac": "02:42:c6:12:00:fd"},
            ctr,
        ],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0", "gw": "198.18.0.1"}],
        "dns": {"nameservers": ["198.18.0.1"]},
    })
}

pub fn merge(conf: &mut Value, extra: Value) {
    for (k, v) in extra.as_object().unwrap() {
        conf[k] = v.clone();
    }
}

/// `conf` with `prevResult` replaced by `result` (what a runtime sends to CHECK and DEL).
pub fn with_prev(conf: &Value, result: &Value) -> Value {
    let mut conf = conf.clone();
    conf["prevResult"] = result.clone();
    conf
}

pub fn without_prev(conf: &Value) -> Value {
    let mut conf = conf.clone();
    conf.as_object_mut().unwrap().remove("prevResult");
    conf
}

pub fn error_code(out: &PluginOutput) -> u64 {
    assert!(!out.success(), "expected a failure: {out:?}");
    out.json().unwrap()["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("no code: {out:?}"))
}

/// A configuration that changes every attribute and three kinds of sysctl.
pub fn full_keys(mac: &str) -> Value {
    json!({
        "sysctl": {
            "net.core.somaxconn": "1024",
            "net.ipv4.conf.IFNAME.arp_filter": "1",
            "net/ipv4/tcp_rmem": "4096 65536 1048576",
        },
        "mac": mac,
        "mtu": 1400,
        "promisc": true,
        "allmulti": true,
    })
}
