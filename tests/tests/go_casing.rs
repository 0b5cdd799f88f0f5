//! Keys in other casings, as Go clients and hand-written configs carry them: the reference
//! plugins read `"IsGateway"` as `isGateway` because Go's `encoding/json` matches keys
//! case-insensitively, so ours must give the same result and leave the same kernel state.
//! Each implementation runs in its own throwaway host namespace.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::path::{Path, PathBuf};
use std::process::Command;

use netns_fixtures::{
    CniCall, HostAndContainer, PluginOutput, bin, require_root, test_subnet_v4, unique_name,
};
use serde_json::{Value, json};

const REFERENCE_DIR: &str = "/usr/lib/cni";

#[derive(Clone, Copy, Debug)]
enum Impl {
    Ours,
    Reference,
}

impl Impl {
    fn plugin(self, name: &str) -> PathBuf {
        match self {
            Impl::Ours => bin(name),
            Impl::Reference => {
                let path = Path::new(REFERENCE_DIR).join(name);
                assert!(
                    path.exists(),
                    "{} missing: install containernetworking-plugins",
                    path.display()
                );
                path
            }
        }
    }

    fn dir(self) -> PathBuf {
        self.plugin("host-local").parent().unwrap().to_owned()
    }
}

fn call(imp: Impl, env: &HostAndContainer, plugin: &str, verb: &str, conf: &Value) -> PluginOutput {
    CniCall::new(imp.plugin(plugin))
        .command(verb)
        .container_id("ctr-casing")
        .netns(env.ctr.path())
        .ifname("eth0")
        .path(&[&imp.dir()])
        .stdin_json(conf)
        .run_in(&env.host)
        .unwrap()
}

fn with_prev(conf: &Value, result: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = result.clone();
    c
}

fn ip_in(env: &HostAndContainer, ctr: bool, args: &[&str]) -> String {
    if ctr {
        env.ctr.ip(args).unwrap()
    } else {
        env.host.ip(args).unwrap()
    }
}

/// The NAT rules of the host namespace, whichever backend wrote them.
fn nat_rules(env: &HostAndContainer) -> String {
    let mut out = String::new();
    for cmd in [
        vec!["iptables-save", "-t", "nat"],
        vec!["nft", "list", "ruleset"],
    ] {
        if let Ok(o) = env.host.output(Command::new(cmd[0]).args(&cmd[1..])) {
            out.push_str(&String::from_utf8_lossy(&o.stdout));
        }
    }
    out
}

/// What a bridge ADD leaves that the casing test compares: the bridge's addresses, the port's
/// hairpin flag, the container's MTU and whether the container's address is masqueraded.
#[derive(Debug, PartialEq)]
struct BridgeState {
    bridge_has_gateway: bool,
    hairpin: bool,
    ctr_mtu: String,
    masqueraded: bool,
}

fn bridge_state(env: &HostAndContainer, bridge: &str, result: &Value) -> BridgeState {
    let gw = result["ips"][0]["gateway"].as_str().unwrap().to_owned();
    let ctr_addr = result["ips"][0]["address"].as_str().unwrap();
    let ctr_ip = ctr_addr.split('/').next().unwrap();
    let bridge_addrs = ip_in(env, false, &["-o", "addr", "show", "dev", bridge]);
    let ports = ip_in(env, false, &["-d", "-o", "link", "show", "master", bridge]);
    let ctr_link = ip_in(env, true, &["-o", "link", "show", "eth0"]);
    let mtu = ctr_link
        .split_whitespace()
        .skip_while(|w| *w != "mtu")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let nat = nat_rules(env);
    let subnet = result["ips"][0]["address"].as_str().unwrap();
    BridgeState {
        bridge_has_gateway: bridge_addrs.contains(&format!("inet {gw}/")),
        hairpin: ports.contains("hairpin on"),
        ctr_mtu: mtu,
        masqueraded: nat.contains(ctr_ip) || nat.contains(&network_of(subnet)),
    }
}

/// `198.18.3.7/24` → `198.18.3.0/24`.
fn network_of(cidr: &str) -> String {
    let net: ipnetwork::Ipv4Network = cidr.parse().unwrap();
    format!("{}/{}", net.network(), net.prefix())
}

#[test]
fn bridge_and_host_local_read_go_casings_like_the_reference() {
    require_root();
    let subnet = test_subnet_v4();
    let mut seen = Vec::new();
    for imp in [Impl::Reference, Impl::Ours] {
        let env = HostAndContainer::new().unwrap();
        let bridge = unique_name("bc");
        // Every key in a casing of its own, at every depth: top level, ipam, ranges.
        let conf = json!({
            "CNIVersion": "1.0.0", "Name": "casing-net", "Type": "bridge",
            "Bridge": bridge, "IsGateway": true, "IPMasq": true, "HairpinMode": true,
            "MTU": 1400,
            "IPAM": {"Type": "host-local", "DataDir": env.data_dir(),
                     "Ranges": [[{"Subnet": subnet.to_string(),
                                  "RangeStart": subnet.iter().nth(10).unwrap().to_string(),
                                  "Gateway": subnet.iter().nth(254).unwrap().to_string()}]]},
        });
        let result = call(imp, &env, "bridge", "ADD", &conf).expect_success();
        let state = bridge_state(&env, &bridge, &result);
        call(imp, &env, "bridge", "CHECK", &with_prev(&conf, &result)).expect_success();
        call(imp, &env, "bridge", "DEL", &with_prev(&conf, &result)).expect_success();
        seen.push((imp, result, state));
    }
    let (_, theirs, their_state) = &seen[0];
    let (_, ours, our_state) = &seen[1];
    for key in ["cniVersion", "ips", "routes", "dns"] {
        assert_eq!(theirs[key], ours[key], "{key}:\n{theirs:#}\n{ours:#}");
    }
    assert_eq!(
        their_state,
        &BridgeState {
            bridge_has_gateway: true,
            hairpin: true,
            ctr_mtu: "1400".into(),
            masqueraded: true,
        },
        "the reference read every key: the test's premise"
    );
    assert_eq!(our_state, their_state);
}

#[test]
fn ptp_and_veth_read_go_casings_like_the_reference() {
    require_root();
    let subnet = test_subnet_v4();
    let mut seen = Vec::new();
    for (imp, plugin) in [(Impl::Reference, "ptp"), (Impl::Ours, "veth")] {
        let env = HostAndContainer::new().unwrap();
        let conf = json!({
            "cniVersion": "0.4.0", "name": "casing-ptp", "type": plugin,
            "IPMasq": true, "Mtu": 1300,
            "ipam": {"TYPE": "host-local", "SUBNET": subnet.to_string(), "dataDir": env.data_dir()},
        });
        let result = call(imp, &env, plugin, "ADD", &conf).expect_success();
        let ctr = ip_in(&env, true, &["-o", "link", "show", "eth0"]);
        let ctr_ip = result["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let masq = nat_rules(&env).contains(&ctr_ip);
        call(imp, &env, plugin, "DEL", &with_prev(&conf, &result)).expect_success();
        seen.push((result, ctr.contains("mtu 1300"), masq));
    }
    let (theirs, their_mtu, their_masq) = &seen[0];
    let (ours, our_mtu, our_masq) = &seen[1];
    for key in ["ips", "routes"] {
        assert_eq!(theirs[key], ours[key], "{key}:\n{theirs:#}\n{ours:#}");
    }
    assert!(*their_mtu && *their_masq, "the reference read every key");
    assert_eq!((our_mtu, our_masq), (their_mtu, their_masq));
}

/// The same capability payload from a Go client with capitalised keys: portmap's
/// `PortMappings` entries and host-local's `IPs`.
#[test]
fn runtime_config_and_args_keys_fold_like_the_reference() {
    require_root();
    let subnet = test_subnet_v4();
    let wanted = subnet.iter().nth(42).unwrap().to_string();
    let mut seen = Vec::new();
    for imp in [Impl::Reference, Impl::Ours] {
        let env = HostAndContainer::new().unwrap();
        let conf = json!({
            "cniVersion": "1.0.0", "name": "casing-rt", "type": "host-local",
            "RuntimeConfig": {"IPs": [wanted]},
            "ipam": {"type": "host-local", "subnet": subnet.to_string(), "dataDir": env.data_dir()},
        });
        let result = call(imp, &env, "host-local", "ADD", &conf).expect_success();
        call(imp, &env, "host-local", "DEL", &conf).expect_success();
        let conf = json!({
            "cniVersion": "1.0.0", "name": "casing-args", "type": "host-local",
            "Args": {"CNI": {"IPs": [wanted]}},
            "ipam": {"type": "host-local", "subnet": subnet.to_string(), "dataDir": env.data_dir()},
        });
        let from_args = call(imp, &env, "host-local", "ADD", &conf).expect_success();
        call(imp, &env, "host-local", "DEL", &conf).expect_success();
        seen.push((result, from_args));
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(
        seen[1].0["ips"][0]["address"],
        format!("{wanted}/{}", subnet.prefix())
    );
}

/// The chained plugins, each given a prevResult: portmap with a Go client's capitalised
/// `RuntimeConfig.PortMappings`, firewall with capitalised keys. Both pass the result through
/// and write rules naming the container's address and the published port, as the reference does.
#[test]
fn portmap_and_firewall_read_go_casings_like_the_reference() {
    require_root();
    for imp in [Impl::Reference, Impl::Ours] {
        let env = HostAndContainer::new().unwrap();
        let prev = json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "br-x"}, {"name": "veth-x"},
                           {"name": "eth0", "sandbox": env.ctr.path()}],
            "ips": [{"address": "198.19.251.5/24", "gateway": "198.19.251.1", "interface": 2}]});
        let portmap = json!({
            "CNIVersion": "1.0.0", "Name": "casing-pm", "Type": "portmap", "SNAT": true,
            "Capabilities": {"portMappings": true},
            "RuntimeConfig": {"PortMappings": [
                {"HostPort": 18089, "ContainerPort": 8089, "Protocol": "tcp", "HostIP": ""}]},
            "PrevResult": prev,
        });
        let out = call(imp, &env, "portmap", "ADD", &portmap).expect_success();
        assert_eq!(out["ips"], prev["ips"], "{imp:?}");
        let rules = nat_rules(&env);
        assert!(
            rules.contains("18089") && rules.contains("198.19.251.5"),
            "{imp:?}: no DNAT for the capitalised mapping:\n{rules}"
        );
        call(imp, &env, "portmap", "DEL", &portmap).expect_success();
        assert!(
            !nat_rules(&env).contains("18089"),
            "{imp:?}: left after DEL"
        );

        let firewall = json!({
            "CNIVersion": "1.0.0", "Name": "casing-fw", "Type": "firewall",
            "Backend": "iptables", "IptablesAdminChainName": "CASING-ADMIN",
            "PrevResult": prev,
        });
        let out = call(imp, &env, "firewall", "ADD", &firewall).expect_success();
        assert_eq!(out["ips"], prev["ips"], "{imp:?}");
        let filter = env
            .host
            .output(Command::new("iptables-save").args(["-t", "filter"]))
            .unwrap();
        let filter = String::from_utf8_lossy(&filter.stdout);
        assert!(
            filter.contains("CASING-ADMIN") && filter.contains("198.19.251.5"),
            "{imp:?}: the admin chain name or the container's rule is missing:\n{filter}"
        );
        call(imp, &env, "firewall", "DEL", &firewall).expect_success();
    }
}
