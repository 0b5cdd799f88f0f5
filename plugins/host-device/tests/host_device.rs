//! `host-device` in throwaway namespaces, side by side with the reference
//! (/usr/lib/cni/host-device, v1.1.1). This kernel has no `dummy`: the "host device" is one end
//! of a veth pair created in the namespace playing the host.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::path::{Path, PathBuf};

use berth_netlink::{Link, format_mac};
use ipnetwork::Ipv4Network;
use netns_fixtures::{
    CniCall, HostAndContainer, PluginOutput, TestNetns, bin, require_root, test_subnet_v4,
    unique_name,
};
use serde_json::{Value, json};

const REFERENCE: &str = "/usr/lib/cni/host-device";
const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
const MTU: u32 = 1400;
const IFNAME: &str = "net1";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Imp {
    Ours,
    Reference,
}

impl Imp {
    fn bin(self) -> PathBuf {
        match self {
            Imp::Ours => PathBuf::from(env!("CARGO_BIN_EXE_host-device")),
            Imp::Reference => {
                assert!(Path::new(REFERENCE).exists(), "{REFERENCE} missing");
                PathBuf::from(REFERENCE)
            }
        }
    }

    /// Each with its own IPAM plugin (`static`).
    fn cni_path(self) -> PathBuf {
        match self {
            Imp::Ours => bin("static").parent().unwrap().to_path_buf(),
            Imp::Reference => PathBuf::from("/usr/lib/cni"),
        }
    }
}

/// A fake host with a "host device": one end of a veth pair (MTU 1400, an address, up or
/// down), and a container namespace.
struct World {
    env: HostAndContainer,
    dev: String,
    mac: String,
}

impl World {
    fn new(up: bool) -> World {
        let env = HostAndContainer::new().unwrap();
        let (dev, peer) = (unique_name("hd"), unique_name("hdp"));
        let mtu = MTU.to_string();
        env.host
            .ip(&[
                "link", "add", &dev, "mtu", &mtu, "type", "veth", "peer", "name", &peer,
            ])
            .unwrap();
        env.host
            .ip(&["addr", "add", "198.18.255.1/30", "dev", &dev])
            .unwrap();
        if up {
            env.host.ip(&["link", "set", &dev, "up"]).unwrap();
        }
        let mac = format_mac(&host_link(&env.host, &dev).unwrap().mac.unwrap());
        World { env, dev, mac }
    }

    fn conf(&self, version: &str, extra: Value) -> Value {
        let mut c = json!({"cniVersion": version, "name": "hdnet", "type": "host-device",
            "dataDir": self.env.data_dir()});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    fn call(&self, imp: Imp, command: &str, conf: &Value) -> PluginOutput {
        self.cni(imp, command)
            .stdin_json(conf)
            .run_in(&self.env.host)
            .unwrap()
    }

    fn cni(&self, imp: Imp, command: &str) -> CniCall {
        CniCall::new(imp.bin())
            .command(command)
            .container_id("hd-ctr")
            .netns(self.env.ctr.path())
            .ifname(IFNAME)
            .path(&[&imp.cni_path()])
    }
}

fn host_link(ns: &TestNetns, name: &str) -> Option<Link> {
    ns.netlink().link_by_name(name).unwrap()
}

fn static_ipam(net: Ipv4Network) -> Value {
    json!({"type": "static",
        "addresses": [{"address": format!("{}/24", net.nth(5).unwrap()), "gateway": net.nth(1).unwrap().to_string()}],
        "routes": [{"dst": "0.0.0.0/0"}]})
}

fn code(out: &PluginOutput) -> u64 {
    assert!(!out.success(), "expected a failure: {out:?}");
    out.json().unwrap()["code"].as_u64().unwrap()
}

/// The result with what differs between two worlds (netns path, MAC) blanked.
fn normalized(mut result: Value) -> Value {
    for iface in result["interfaces"].as_array_mut().unwrap() {
        iface["sandbox"] = "<netns>".into();
        iface["mac"] = "<mac>".into();
    }
    result
}

/// The device is home under its name, with MTU 1400, in the expected up state, and nothing
/// named IFNAME is left in the container.
fn assert_home(w: &World, up: bool, alias: Option<&str>) {
    let link = host_link(&w.env.host, &w.dev).expect("device back in the host");
    assert_eq!((link.mtu, link.up), (MTU, up), "{link:?}");
    assert_eq!(link.alias.as_deref(), alias, "{link:?}");
    assert!(
        host_link(&w.env.ctr, IFNAME).is_none(),
        "{IFNAME} left in the container"
    );
}

/// The device is in the container as IFNAME, up, alias = its host name, with `address`.
fn assert_inside(w: &World, address: Option<&str>) {
    let link = host_link(&w.env.ctr, IFNAME).expect("device in the container");
    assert!(link.up, "{link:?}");
    assert_eq!(link.alias.as_deref(), Some(w.dev.as_str()));
    assert_eq!(link.mtu, MTU);
    assert!(
        host_link(&w.env.host, &w.dev).is_none(),
        "device still in the host"
    );
    let addrs = w
        .env
        .ctr
        .ip(&["-o", "addr", "show", "dev", IFNAME])
        .unwrap();
    if let Some(a) = address {
        assert!(addrs.contains(&format!("inet {a}")), "{addrs}");
        let routes = w.env.ctr.ip(&["route", "show", "default"]).unwrap();
        assert!(routes.contains(&format!("dev {IFNAME}")), "{routes}");
    }
    assert!(
        !addrs.contains("198.18.255.1"),
        "the host's address went along: {addrs}"
    );
}

#[test]
fn side_by_side_with_the_reference_in_every_version() {
    require_root();
    for version in VERSIONS {
        // One subnet for both: each runs in its own namespaces.
        let net = test_subnet_v4();
        let mut results = Vec::new();
        for imp in [Imp::Reference, Imp::Ours] {
            if imp == Imp::Reference && version == "1.1.0" {
                continue;
            }
            let w = World::new(true);
            let conf = w.conf(version, json!({"device": w.dev, "ipam": static_ipam(net)}));
            let result = w.call(imp, "ADD", &conf).expect_success();
            assert_eq!(result["interfaces"][0]["name"], IFNAME);
            assert_eq!(result["interfaces"][0]["mac"], w.mac.as_str());
            assert_eq!(
                result["interfaces"][0]["sandbox"],
                w.env.ctr.path().to_str().unwrap()
            );
            assert_inside(&w, Some(&format!("{}/24", net.nth(5).unwrap())));
            let mut with_prev = conf.clone();
            with_prev["prevResult"] = result.clone();
            if version != "0.3.0" && version != "0.3.1" {
                w.call(imp, "CHECK", &with_prev).expect_success();
            }
            w.call(imp, "DEL", &with_prev).expect_success();
            let again = w.call(imp, "DEL", &with_prev);
            match imp {
                Imp::Ours => {
                    // Back as it was: name, MTU, up, its (empty) alias; a second DEL is fine.
                    assert_home(&w, true, None);
                    again.expect_success();
                    assert_eq!(std::fs::read_dir(w.env.data_dir()).unwrap().count(), 0);
                }
                Imp::Reference => {
                    // The reference leaves it down, its alias set, and fails a second DEL.
                    assert_home(&w, false, Some(&w.dev));
                    assert_eq!(code(&again), 999);
                }
            }
            results.push(normalized(result));
        }
        match version {
            // 1.1.0 adds the interface's MTU.
            "1.1.0" => assert_eq!(results[0]["interfaces"][0]["mtu"], MTU),
            _ => assert_eq!(results[0], results[1], "{version}"),
        }
    }
}

#[test]
fn selection_by_hwaddr_restores_a_down_device() {
    require_root();
    let mut results = Vec::new();
    for imp in [Imp::Reference, Imp::Ours] {
        let w = World::new(false);
        // Upper case and dashes: Go's ParseMAC reads it, so do we.
        let hwaddr = w.mac.to_uppercase().replace(':', "-");
        let conf = w.conf("1.0.0", json!({"hwaddr": hwaddr}));
        let result = w.call(imp, "ADD", &conf).expect_success();
        assert_inside(&w, None);
        let mut with_prev = conf.clone();
        with_prev["prevResult"] = result.clone();
        w.call(imp, "CHECK", &with_prev).expect_success();
        w.call(imp, "DEL", &with_prev).expect_success();
        let alias = (imp == Imp::Reference).then_some(w.dev.as_str());
        assert_home(&w, false, alias);
        results.push(normalized(result));
    }
    assert_eq!(results[0], results[1]);
}

#[test]
fn kernelpath_and_pci_fail_like_the_reference_and_change_nothing() {
    require_root();
    let w = World::new(true);
    // (what, extra keys, reference's code, ours). No PCI device or sysfs path here has one of
    // the fake host's links, so only error paths can be tested.
    #[rustfmt::skip]
    let cases: Vec<(&str, Value, u64, u64)> = vec![
        ("kernelpath with no net/", json!({"kernelpath": "/sys/devices/berth-nosuch"}), 999, 999),
        ("relative kernelpath", json!({"kernelpath": "devices/x"}), 999, 7),
        ("absent PCI device", json!({"pciBusID": "0000:ff:1f.7"}), 999, 999),
        ("absent runtimeConfig.deviceID", json!({"runtimeConfig": {"deviceID": "0000:ff:1f.6"}}), 999, 999),
        ("PCI address with a path", json!({"pciBusID": "../../devices"}), 999, 7),
        ("no device key", json!({}), 999, 7),
        ("device of the wrong JSON type", json!({"device": 5}), 999, 6),
        ("bad hwaddr", json!({"hwaddr": "zz"}), 999, 7),
        ("absent hwaddr", json!({"hwaddr": "02:00:5e:00:53:99"}), 999, 999),
        ("absent device", json!({"device": "bt-nosuch"}), 999, 999),
    ];
    for (what, extra, theirs, mine) in cases {
        let conf = w.conf("1.0.0", extra);
        assert_eq!(
            code(&w.call(Imp::Reference, "ADD", &conf)),
            theirs,
            "reference: {what}"
        );
        assert_eq!(code(&w.call(Imp::Ours, "ADD", &conf)), mine, "ours: {what}");
        let link = host_link(&w.env.host, &w.dev).unwrap();
        assert!(link.up && link.alias.is_none(), "{what}: {link:?}");
        assert!(host_link(&w.env.ctr, IFNAME).is_none(), "{what}");
    }
}

#[test]
fn a_device_in_another_namespace_is_not_found() {
    require_root();
    let w = World::new(true);
    // A veth end living in a third namespace (as if another container had it).
    let other = TestNetns::with_tag("o").unwrap();
    let (elsewhere, peer) = (unique_name("hde"), unique_name("hdq"));
    other
        .ip(&[
            "link", "add", &elsewhere, "type", "veth", "peer", "name", &peer,
        ])
        .unwrap();
    let conf = w.conf("1.0.0", json!({"device": elsewhere}));
    for imp in [Imp::Reference, Imp::Ours] {
        assert_eq!(code(&w.call(imp, "ADD", &conf)), 999, "{imp:?}");
        assert!(
            host_link(&other, &elsewhere).is_some(),
            "{imp:?} touched it"
        );
        assert!(host_link(&w.env.ctr, IFNAME).is_none());
    }
}

/// Found by the fuzz harness (berth-fuzz): with CNI_NETNS naming the plugin's own namespace,
/// the reference "moves" the device nowhere, configures the IPAM address on it in the host, and
/// its DEL leaves that address there (nothing flushes it: the device never changed namespace).
/// Ours refuses such a CNI_NETNS before touching anything.
#[test]
fn cni_netns_naming_the_host_itself_is_refused() {
    require_root();
    let w = World::new(true);
    let net = test_subnet_v4();
    let conf = w.conf("1.0.0", json!({"device": w.dev, "ipam": static_ipam(net)}));
    let before = w
        .env
        .host
        .ip(&["-o", "addr", "show", "dev", &w.dev])
        .unwrap();
    let call = |command: &str| {
        w.cni(Imp::Ours, command)
            .netns(w.env.host.path())
            .stdin_json(&conf)
            .run_in(&w.env.host)
            .unwrap()
    };
    assert_eq!(code(&call("ADD")), 4);
    call("DEL").expect_success();
    assert_home(&w, true, None);
    assert_eq!(
        w.env
            .host
            .ip(&["-o", "addr", "show", "dev", &w.dev])
            .unwrap(),
        before,
        "addresses of the device changed"
    );
}

#[test]
fn a_failed_add_brings_the_device_back() {
    require_root();
    let net = test_subnet_v4();
    // IPAM fails after the move (static refuses an address without prefix length).
    let bad_ipam =
        json!({"type": "static", "addresses": [{"address": net.nth(5).unwrap().to_string()}]});
    for imp in [Imp::Reference, Imp::Ours] {
        let w = World::new(true);
        let out = w.call(
            imp,
            "ADD",
            &w.conf("1.0.0", json!({"device": w.dev, "ipam": bad_ipam})),
        );
        match imp {
            Imp::Ours => {
                assert_eq!(code(&out), 7, "static's code is passed on");
                assert_home(&w, true, None);
                assert_eq!(std::fs::read_dir(w.env.data_dir()).unwrap().count(), 0);
            }
            Imp::Reference => {
                assert_eq!(code(&out), 999);
                // The reference leaves the device in the container.
                assert!(host_link(&w.env.ctr, IFNAME).is_some());
            }
        }
    }

    // The addresses cannot be configured (a route via a gateway that is not on the link).
    let w = World::new(true);
    let other = test_subnet_v4();
    let unreachable = json!({"type": "static",
        "addresses": [{"address": format!("{}/24", net.nth(5).unwrap())}],
        "routes": [{"dst": "0.0.0.0/0", "gw": other.nth(1).unwrap().to_string()}]});
    let out = w.call(
        Imp::Ours,
        "ADD",
        &w.conf("1.1.0", json!({"device": w.dev, "ipam": unreachable})),
    );
    assert_eq!(code(&out), 999);
    assert_home(&w, true, None);

    // CNI_IFNAME already taken in the container: nothing moves.
    let w = World::new(true);
    w.env
        .ctr
        .ip(&[
            "link", "add", IFNAME, "type", "veth", "peer", "name", "taken1",
        ])
        .unwrap();
    for imp in [Imp::Reference, Imp::Ours] {
        let out = w.call(imp, "ADD", &w.conf("1.0.0", json!({"device": w.dev})));
        assert_eq!(code(&out), 999, "{imp:?}");
        if imp == Imp::Reference {
            // The reference moved it in, failed to rename it, and left it there: fetch it back.
            w.env
                .ctr
                .ip(&["link", "set", &w.dev, "netns", w.env.host.name()])
                .unwrap();
            w.env.host.ip(&["link", "set", &w.dev, "alias", ""]).ok();
            w.env.host.ip(&["link", "set", &w.dev, "up"]).unwrap();
        }
    }
    let link = host_link(&w.env.host, &w.dev).unwrap();
    assert!(
        link.up && link.alias.as_deref().is_none_or(str::is_empty),
        "{link:?}"
    );
    assert!(
        host_link(&w.env.ctr, "taken1").is_some(),
        "the container's own link was touched"
    );
}

#[test]
fn del_after_the_container_namespace_is_gone() {
    require_root();
    // A virtual device dies with the namespace: DEL succeeds, says so on stderr, and drops
    // the record.
    let w = World::new(true);
    let conf = w.conf("1.0.0", json!({"device": w.dev}));
    let result = w.call(Imp::Ours, "ADD", &conf).expect_success();
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = result;
    let World { env, dev, .. } = w;
    let HostAndContainer { host, ctr, tmp } = env;
    let ctr_path = ctr.path().to_path_buf();
    drop(ctr);
    let del = CniCall::new(Imp::Ours.bin())
        .command("DEL")
        .container_id("hd-ctr")
        .netns(&ctr_path)
        .ifname(IFNAME)
        .path(&[&Imp::Ours.cni_path()])
        .stdin_json(&with_prev)
        .run_in(&host)
        .unwrap();
    del.expect_success();
    assert!(
        del.stderr.contains("destroyed with its namespace"),
        "{del:?}"
    );
    assert!(
        host_link(&host, &dev).is_none(),
        "a veth does not survive its namespace"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path().join("data")).unwrap().count(),
        0
    );

    // A physical device returns to the initial namespace under its container name, alias
    // kept. Played here by moving the link out by hand before the namespace goes: DEL finds
    // it by its alias and gives it back its name, MTU and up state.
    let w = World::new(true);
    let conf = w.conf("1.1.0", json!({"device": w.dev}));
    w.call(Imp::Ours, "ADD", &conf).expect_success();
    w.env
        .ctr
        .ip(&["link", "set", IFNAME, "netns", w.env.host.name()])
        .unwrap();
    let World { env, dev, .. } = w;
    let HostAndContainer { host, ctr, tmp } = env;
    let ctr_path = ctr.path().to_path_buf();
    drop(ctr);
    for netns in [Some(&ctr_path), None] {
        let mut call = CniCall::new(Imp::Ours.bin())
            .command("DEL")
            .container_id("hd-ctr")
            .ifname(IFNAME)
            .path(&[&Imp::Ours.cni_path()])
            .stdin_json(&conf);
        if let Some(p) = netns {
            call = call.netns(p);
        }
        call.run_in(&host).unwrap().expect_success();
    }
    let link = host_link(&host, &dev).expect("renamed back");
    assert_eq!(
        (link.mtu, link.up, link.alias.as_deref()),
        (MTU, true, None)
    );
    assert!(host_link(&host, IFNAME).is_none());
    assert_eq!(
        std::fs::read_dir(tmp.path().join("data")).unwrap().count(),
        0
    );
}

#[test]
fn del_of_a_device_the_reference_moved() {
    require_root();
    // Reference ADD, our DEL: the alias is enough to bring it home (left down, as the
    // reference would, since only it knew the state).
    let w = World::new(true);
    let conf = w.conf("1.0.0", json!({"device": w.dev}));
    w.call(Imp::Reference, "ADD", &conf).expect_success();
    w.call(Imp::Ours, "DEL", &conf).expect_success();
    let link = host_link(&w.env.host, &w.dev).unwrap();
    assert_eq!(link.mtu, MTU);
    // Our ADD, reference DEL: it finds its name in the alias too.
    w.call(Imp::Ours, "ADD", &conf).expect_success();
    w.call(Imp::Reference, "DEL", &conf).expect_success();
    assert!(host_link(&w.env.host, &w.dev).is_some());
}

#[test]
fn status_gc_and_older_versions() {
    require_root();
    let w = World::new(true);
    let net = test_subnet_v4();
    let conf = w.conf("1.1.0", json!({"device": w.dev, "ipam": static_ipam(net)}));
    w.call(Imp::Ours, "ADD", &conf).expect_success();
    w.call(Imp::Ours, "STATUS", &conf).expect_success();
    let records = || std::fs::read_dir(w.env.data_dir().join("hdnet")).map_or(0, |d| d.count());
    assert_eq!(records(), 1);
    let mut keep = conf.clone();
    keep["cni.dev/valid-attachments"] = json!([{"containerID": "hd-ctr", "ifname": IFNAME}]);
    w.call(Imp::Ours, "GC", &keep).expect_success();
    assert_eq!(records(), 1, "GC keeps a valid attachment's record");
    let mut drop_all = conf.clone();
    drop_all["cni.dev/valid-attachments"] = json!([]);
    w.call(Imp::Ours, "GC", &drop_all).expect_success();
    assert_eq!(
        records(),
        0,
        "GC drops the record of an attachment the runtime forgot"
    );
    for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
        let c = w.conf(version, json!({"device": w.dev}));
        assert_eq!(code(&w.call(Imp::Ours, "STATUS", &c)), 1, "{version}");
        let mut gc = c.clone();
        gc["cni.dev/valid-attachments"] = json!([]);
        assert_eq!(code(&w.call(Imp::Ours, "GC", &gc)), 1, "{version}");
    }
    let c = w.conf("0.3.1", json!({"device": w.dev}));
    assert_eq!(code(&w.call(Imp::Ours, "CHECK", &c)), 1);
    let c = w.conf("1.0.0", json!({"device": w.dev}));
    let no_prev = w.call(Imp::Ours, "CHECK", &c);
    assert_eq!(code(&no_prev), 7);
}

#[test]
fn keys_in_other_cases_like_go() {
    require_root();
    let mut results = Vec::new();
    for imp in [Imp::Reference, Imp::Ours] {
        let w = World::new(true);
        let net = test_subnet_v4();
        let conf = w.conf(
            "1.0.0",
            json!({"Device": w.dev, "IPAM": {"Type": "static",
            "Addresses": [{"address": format!("{}/24", net.nth(5).unwrap())}]}}),
        );
        let result = w.call(imp, "ADD", &conf).expect_success();
        assert_inside(&w, None);
        w.call(imp, "DEL", &conf).expect_success();
        results.push((normalized(result), net));
    }
    assert_eq!(results[0].0["ips"].as_array().unwrap().len(), 1);
    assert_eq!(results[0].0["interfaces"], results[1].0["interfaces"]);
}
