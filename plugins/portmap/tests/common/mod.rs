//! A world for the portmap tests: a host namespace with a `bridge` + `host-local` +
//! `portmap` network (the real binaries, driven by the libcni-equivalent invoker), two
//! containers on it, a client on another link and a "far" machine routed through the host.

#![allow(dead_code, clippy::unwrap_used)] // Each test binary uses a subset; panics are reports.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;

use berth_cni::invoke::{CniConfig, RuntimeConf};
use berth_cni::{CniResult, ContainerId, IfName, NetConfList};
use ipnetwork::IpNetwork;
use netns_fixtures::{EchoServer, TestNetns, bin, test_subnet_v4, unique_name, wire};
use serde_json::{Value, json};
use tempfile::TempDir;

pub const BACKENDS: [&str; 2] = ["iptables", "nftables"];

/// Where the plugins live (target/<profile>): CNI_PATH.
pub fn plugin_dir() -> PathBuf {
    bin("portmap").parent().unwrap().to_path_buf()
}

pub fn sh(ns: &TestNetns, program: &str, args: &[&str]) -> String {
    let out = ns.output(Command::new(program).args(args)).unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn sysctl(ns: &TestNetns, key: &str, value: &str) {
    ns.run(|| berth_netlink::sysctl::write(key, value))
        .unwrap()
        .unwrap();
}

/// Every netfilter rule in `ns`: both iptables families (all tables) and the nft ruleset.
pub fn ruleset(ns: &TestNetns) -> Vec<String> {
    let mut lines = Vec::new();
    for tool in ["iptables-save", "ip6tables-save"] {
        lines.extend(
            sh(ns, tool, &[])
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| format!("{tool}: {l}")),
        );
    }
    lines.extend(
        sh(ns, "nft", &["list", "ruleset"])
            .lines()
            .map(|l| format!("nft: {l}")),
    );
    lines
}

/// Lines naming an attachment: owner comments, owner chains, owner elements.
pub fn owner_lines(ns: &TestNetns) -> Vec<String> {
    ruleset(ns)
        .into_iter()
        .filter(|l| {
            l.contains("\"berth ")
                || l.contains("BERTH-DN-")
                || l.contains("BERTH-MASQ-")
                || l.contains("hpc-")
                || l.contains("\"berth-isolation ")
        })
        .collect()
}

pub struct World {
    pub host: TestNetns,
    pub ctr1: TestNetns,
    pub ctr2: TestNetns,
    pub client: TestNetns,
    pub far: TestNetns,
    pub tmp: TempDir,
    pub bridge: String,
    pub subnet: IpNetwork,
    /// The host's address facing the client.
    pub host_ip: IpAddr,
    pub far_ip: IpAddr,
    pub cni: CniConfig,
}

fn nth(net: IpNetwork, n: u32) -> IpNetwork {
    let IpAddr::V4(base) = net.network() else {
        panic!("IPv4 only")
    };
    IpNetwork::new(IpAddr::V4((u32::from(base) + n).into()), net.prefix()).unwrap()
}

impl World {
    pub fn new() -> World {
        let host = TestNetns::with_tag("h").unwrap();
        let ctr1 = TestNetns::with_tag("c1").unwrap();
        let ctr2 = TestNetns::with_tag("c2").unwrap();
        let client = TestNetns::with_tag("cl").unwrap();
        let far = TestNetns::with_tag("far").unwrap();
        let (cnet, fnet): (IpNetwork, IpNetwork) =
            (test_subnet_v4().into(), test_subnet_v4().into());
        wire(&host, "h1", &client, "eth0").unwrap();
        wire(&host, "h2", &far, "eth0").unwrap();
        for (ns, dev, a) in [
            (&host, "h1", nth(cnet, 1)),
            (&client, "eth0", nth(cnet, 2)),
            (&host, "h2", nth(fnet, 1)),
            (&far, "eth0", nth(fnet, 2)),
        ] {
            ns.ip(&["addr", "add", &a.to_string(), "dev", dev]).unwrap();
        }
        client
            .ip(&[
                "route",
                "add",
                "default",
                "via",
                &nth(cnet, 1).ip().to_string(),
            ])
            .unwrap();
        far.ip(&[
            "route",
            "add",
            "default",
            "via",
            &nth(fnet, 1).ip().to_string(),
        ])
        .unwrap();
        sysctl(&host, "net/ipv4/ip_forward", "1");
        let tmp = tempfile::Builder::new()
            .prefix("berth-pm-")
            .tempdir()
            .unwrap();
        let cni = CniConfig::new(vec![plugin_dir()], tmp.path().join("cache"));
        World {
            host,
            ctr1,
            ctr2,
            client,
            far,
            bridge: unique_name("br"),
            subnet: test_subnet_v4().into(),
            host_ip: nth(cnet, 1).ip(),
            far_ip: nth(fnet, 2).ip(),
            tmp,
            cni,
        }
    }

    /// bridge (gateway, ipMasq, hairpinMode) + portmap, both on `backend`, plus `extra`
    /// portmap keys.
    pub fn conflist(&self, version: &str, backend: &str, extra: Value) -> NetConfList {
        let mut portmap = json!({"type": "portmap", "capabilities": {"portMappings": true},
            "backend": backend});
        for (k, v) in extra.as_object().unwrap() {
            portmap[k] = v.clone();
        }
        let list = json!({
            "cniVersion": version,
            "name": format!("pm-{}", self.bridge),
            "plugins": [
                {"type": "bridge", "bridge": self.bridge, "isGateway": true, "ipMasq": true,
                 "ipMasqBackend": backend, "hairpinMode": true,
                 "ipam": {"type": "host-local", "subnet": self.subnet.to_string(),
                          "dataDir": self.tmp.path().join("data"),
                          "routes": [{"dst": "0.0.0.0/0"}]}},
                portmap
            ]
        });
        NetConfList::from_bytes(&serde_json::to_vec(&list).unwrap()).unwrap()
    }

    pub fn rt(&self, ns: &TestNetns, id: &str, mappings: Value) -> RuntimeConf {
        let mut rt = RuntimeConf::new(
            ContainerId::try_from(id).unwrap(),
            Some(ns.path().to_owned()),
            IfName::try_from("eth0").unwrap(),
        );
        if !mappings.is_null() {
            rt.capability_args.insert("portMappings".into(), mappings);
        }
        rt
    }

    pub fn add(&self, list: &NetConfList, rt: &RuntimeConf) -> CniResult {
        self.host
            .run(|| self.cni.add_network_list(list, rt))
            .unwrap()
            .unwrap_or_else(|e| panic!("ADD: {}", berth_cni::invoke::error_chain(&e)))
    }

    pub fn del(&self, list: &NetConfList, rt: &RuntimeConf) {
        self.host
            .run(|| self.cni.del_network_list(list, rt))
            .unwrap()
            .unwrap_or_else(|e| panic!("DEL: {}", berth_cni::invoke::error_chain(&e)));
    }

    pub fn check(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<(), String> {
        self.host
            .run(|| self.cni.check_network_list(list, rt))
            .unwrap()
            .map_err(|e| berth_cni::invoke::error_chain(&e))
    }
}

/// A TCP+UDP server in `ns` answering `reply` (see [`EchoServer`]).
pub fn serve(ns: &TestNetns, addr: SocketAddr, reply: &str) -> EchoServer {
    EchoServer::start(ns, addr, reply).unwrap()
}

/// One UDP datagram from an ephemeral port; the answer.
pub fn udp_get(ns: &TestNetns, to: SocketAddr) -> Option<String> {
    netns_fixtures::udp_get(ns, to, None)
}
