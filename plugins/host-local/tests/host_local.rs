//! The host-local binary, exec'd the way a runtime (or a main plugin delegating its IPAM) does.
//!
//! host-local touches no network, only files under `dataDir`; it still runs inside a throwaway
//! host namespace, so no plugin binary ever runs in the real host netns. Every test builds its
//! own world and keeps its `dataDir` in that world's temp dir.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Instant;

use berth_cni::delegate::{delegate_add, delegate_check, delegate_del};
use berth_cni::{CmdArgs, Command, ContainerId, ErrorCode, IfName};
use ipnetwork::{IpNetwork, Ipv4Network};
use netns_fixtures::{
    CniCall, HostAndContainer, PluginOutput, require_root, test_subnet_v4, test_subnet_v6,
};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_host-local");
const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
const NET: &str = "hl-test";

fn v4() -> IpNetwork {
    IpNetwork::V4(test_subnet_v4())
}

fn v6() -> IpNetwork {
    IpNetwork::V6(test_subnet_v6())
}

/// Address `n` of `net` (0 is the network address).
fn nth(net: IpNetwork, n: u32) -> IpAddr {
    match net {
        IpNetwork::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4.network()) + n)),
        IpNetwork::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6.network()) + u128::from(n))),
    }
}

/// `nth` as text, for JSON and CNI_ARGS.
fn at(net: IpNetwork, n: u32) -> String {
    nth(net, n).to_string()
}

/// `nth` with the subnet's prefix, as results write addresses.
fn cidr(net: IpNetwork, n: u32) -> String {
    format!("{}/{}", nth(net, n), net.prefix())
}

/// A network config as a main plugin (bridge) receives it; `ipam` gets its `type` and, unless
/// it names one, the world's `dataDir`.
fn conf_named(env: &HostAndContainer, name: &str, version: &str, mut ipam: Value) -> Value {
    ipam["type"] = "host-local".into();
    if ipam.get("dataDir").is_none() {
        ipam["dataDir"] = env.data_dir().to_str().expect("utf-8 temp dir").into();
    }
    json!({"cniVersion": version, "name": name, "type": "bridge", "ipam": ipam})
}

fn conf(env: &HostAndContainer, version: &str, ipam: Value) -> Value {
    conf_named(env, NET, version, ipam)
}

/// An attachment verb (ADD, DEL, CHECK) for `id` on `ifname`, without stdin yet.
fn cni_on(env: &HostAndContainer, command: &str, id: &str, ifname: &str) -> CniCall {
    CniCall::new(BIN)
        .command(command)
        .container_id(id)
        .netns(env.ctr.path())
        .ifname(ifname)
        .path(&[Path::new("/nonexistent")])
}

fn cni(env: &HostAndContainer, command: &str, id: &str) -> CniCall {
    cni_on(env, command, id, "eth0")
}

fn run(env: &HostAndContainer, call: CniCall, conf: &Value) -> PluginOutput {
    call.stdin_json(conf)
        .run_in(&env.host)
        .expect("run host-local")
}

/// ADD, DEL or CHECK for `id` on eth0.
fn call(env: &HostAndContainer, command: &str, id: &str, conf: &Value) -> PluginOutput {
    run(env, cni(env, command, id), conf)
}

/// STATUS or GC: verbs about the network, without container id, netns or ifname.
fn network_call(env: &HostAndContainer, command: &str, conf: &Value) -> PluginOutput {
    let call = CniCall::new(BIN)
        .command(command)
        .path(&[Path::new("/nonexistent")]);
    run(env, call, conf)
}

/// The addresses of an ADD result, in order.
fn addresses(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .unwrap_or_else(|| panic!("no ips in {result}"))
        .iter()
        .map(|ip| ip["address"].as_str().expect("address").to_owned())
        .collect()
}

/// ADD for `id` (eth0); returns the addresses.
fn add(env: &HostAndContainer, id: &str, conf: &Value) -> Vec<String> {
    addresses(&call(env, "ADD", id, conf).expect_success())
}

/// The CNI error code of a failed call; also checks the error object has a message.
fn error_code(out: &PluginOutput) -> u64 {
    assert!(!out.success(), "expected a failure: {out:?}");
    let err = out
        .json()
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {out:?}"));
    assert!(
        err["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "no msg: {out:?}"
    );
    err["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("no code: {out:?}"))
}

/// `<data_dir>/<network>/` as file name → content.
fn store_files_of(data_dir: &Path, network: &str) -> BTreeMap<String, String> {
    fs::read_dir(data_dir.join(network))
        .expect("read the network's state dir")
        .map(|e| {
            let e = e.expect("dir entry");
            let name = e.file_name().into_string().expect("utf-8 name");
            (name, fs::read_to_string(e.path()).expect("read state file"))
        })
        .collect()
}

fn store_files(env: &HostAndContainer) -> BTreeMap<String, String> {
    store_files_of(&env.data_dir(), NET)
}

fn store_names(env: &HostAndContainer) -> BTreeSet<String> {
    store_files(env).into_keys().collect()
}

fn only_lock() -> BTreeSet<String> {
    ["lock".to_owned()].into()
}

/// `<dataDir>/.berth-keys/<network>`: the key index beside the network directory.
fn index_dir(env: &HostAndContainer) -> PathBuf {
    env.data_dir().join(".berth-keys").join(NET)
}

/// A network whose attachments are all gone keeps its `lock` and nothing else: no
/// reservation, no hint, and no key index (which goes with the last reservation).
fn assert_only_lock(env: &HostAndContainer) {
    assert_eq!(store_names(env), only_lock());
    assert!(
        !env.data_dir().join(".berth-keys").exists(),
        "the key index outlived the last reservation"
    );
}

/// Every path under `root` with its content (`None` for a directory, `-> target` for a
/// symlink, such as the key index's), and the mtime of each directory (the index seals the
/// network directory's).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            if meta.is_dir() {
                let mtime = format!("mtime {}.{}", meta.mtime(), meta.mtime_nsec());
                out.insert(path.clone(), Some(mtime.into_bytes()));
                todo.push(path);
            } else if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).expect("readlink");
                let text = [b"-> ", target.as_os_str().as_bytes()].concat();
                out.insert(path.clone(), Some(text));
            } else {
                out.insert(path.clone(), Some(fs::read(&path).expect("read file")));
            }
        }
    }
    out
}

#[test]
fn add_check_del_in_every_version() {
    require_root();
    for version in VERSIONS {
        let env = HostAndContainer::new().expect("world");
        let (net4, net6) = (v4(), v6());
        let resolv = env.tmp.path().join("resolv.conf");
        fs::write(
            &resolv,
            "# written by the test\nnameserver 198.18.0.53\nnameserver fd42:b347::53\n\
             domain example.test\nsearch a.example.test b.example.test\noptions ndots:2 edns0\n",
        )
        .expect("write resolv.conf");
        let conf = conf(
            &env,
            version,
            json!({
                "ranges": [[{"subnet": net4.to_string()}], [{"subnet": net6.to_string()}]],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "198.18.0.0/15", "gw": at(net4, 1)},
                           {"dst": "::/0"}],
                "resolvConf": resolv,
            }),
        );

        let result = call(&env, "ADD", "ctr-1", &conf).expect_success();
        let ip = |net, family: &str| {
            let mut ip = json!({"address": cidr(net, 2), "gateway": at(net, 1)});
            if version < "1.0.0" {
                ip["version"] = family.into();
            }
            ip
        };
        let expected = json!({
            "cniVersion": version,
            "ips": [ip(net4, "4"), ip(net6, "6")],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "198.18.0.0/15", "gw": at(net4, 1)},
                       {"dst": "::/0"}],
            "dns": {"nameservers": ["198.18.0.53", "fd42:b347::53"], "domain": "example.test",
                    "search": ["a.example.test", "b.example.test"], "options": ["ndots:2", "edns0"]},
        });
        assert_eq!(result, expected, "{version}");

        // The reservations, in the reference's layout.
        let files = store_files(&env);
        assert_eq!(files[&at(net4, 2)], "ctr-1\r\neth0", "{version}");
        assert_eq!(files[&at(net6, 2)], "ctr-1\r\neth0", "{version}");
        assert_eq!(files["last_reserved_ip.0"], at(net4, 2), "{version}");
        assert_eq!(files["last_reserved_ip.1"], at(net6, 2), "{version}");
        assert_eq!(files.len(), 5, "{version}: {files:?}");

        let mut with_prev = conf.clone();
        with_prev["prevResult"] = result.clone();
        if version >= "0.4.0" {
            assert_eq!(
                call(&env, "CHECK", "ctr-1", &with_prev).expect_success(),
                Value::Null
            );
            // Without prevResult: the attachment holds something.
            call(&env, "CHECK", "ctr-1", &conf).expect_success();
            // Another attachment holds nothing.
            assert_eq!(error_code(&call(&env, "CHECK", "ctr-2", &with_prev)), 999);
        } else {
            assert_eq!(error_code(&call(&env, "CHECK", "ctr-1", &with_prev)), 1);
        }

        assert_eq!(
            call(&env, "DEL", "ctr-1", &with_prev).expect_success(),
            Value::Null
        );
        assert_only_lock(&env);
        if version >= "0.4.0" {
            let out = call(&env, "CHECK", "ctr-1", &with_prev);
            assert_eq!(error_code(&out), 999, "{version}: {out:?}");
            assert_eq!(error_code(&call(&env, "CHECK", "ctr-1", &conf)), 999);
        }
        // DEL again, and DEL where no state was ever written: both succeed, create nothing.
        call(&env, "DEL", "ctr-1", &with_prev).expect_success();
        let never = env.tmp.path().join("never-written");
        let mut elsewhere = conf.clone();
        elsewhere["ipam"]["dataDir"] = never.to_str().expect("utf-8").into();
        call(&env, "DEL", "ctr-1", &elsewhere).expect_success();
        assert!(
            !never.exists(),
            "{version}: DEL created {}",
            never.display()
        );
        assert_only_lock(&env);
    }
}

#[test]
fn range_layouts() {
    require_root();
    let env = HostAndContainer::new().expect("world");
    let conf = |name: &str, ipam: Value| conf_named(&env, name, "1.0.0", ipam);
    // "address via gateway" of each IP of an ADD result.
    let add_on = |conf: &Value, id: &str| -> Vec<String> {
        let result = call(&env, "ADD", id, conf).expect_success();
        let ips = result["ips"].as_array().expect("ips").iter();
        ips.map(|ip| {
            let text = |key: &str| ip[key].as_str().expect("string").to_owned();
            format!("{} via {}", text("address"), text("gateway"))
        })
        .collect()
    };
    let exhausted = |conf: &Value| error_code(&call(&env, "ADD", "one-more", conf));

    // Single-range shorthand: network + 1 is the gateway, the first address is network + 2.
    let a = v4();
    let c = conf("shorthand", json!({"subnet": a.to_string()}));
    let via = |net, addr, gw| format!("{} via {}", cidr(net, addr), at(net, gw));
    assert_eq!(add_on(&c, "c1"), [via(a, 2, 1)]);
    assert_eq!(add_on(&c, "c2"), [via(a, 3, 1)]);

    // rangeStart/rangeEnd/gateway: a two-address window, then exhaustion.
    let b = v4();
    let c = conf(
        "window",
        json!({"subnet": b.to_string(), "rangeStart": at(b, 100), "rangeEnd": at(b, 101),
               "gateway": at(b, 254)}),
    );
    assert_eq!(add_on(&c, "c1"), [via(b, 100, 254)]);
    assert_eq!(add_on(&c, "c2"), [via(b, 101, 254)]);
    assert_eq!(exhausted(&c), 11);

    // A gateway inside the window is skipped.
    let g = v4();
    let c = conf(
        "gw-inside",
        json!({"subnet": g.to_string(), "rangeStart": at(g, 1), "rangeEnd": at(g, 3),
               "gateway": at(g, 2)}),
    );
    assert_eq!(add_on(&c, "c1"), [via(g, 1, 2)]);
    assert_eq!(add_on(&c, "c2"), [via(g, 3, 2)]);
    assert_eq!(exhausted(&c), 11);

    // Two ranges in one set: round robin goes on into the second when the first is full
    // (its default rangeStart is the gateway, which is skipped).
    let (first, second) = (v4(), v4());
    let c = conf(
        "two-ranges",
        json!({"ranges": [[{"subnet": first.to_string(), "rangeStart": at(first, 253)},
                           {"subnet": second.to_string(), "rangeEnd": at(second, 3)}]]}),
    );
    let got: Vec<Vec<String>> = (0..4).map(|i| add_on(&c, &format!("c{i}"))).collect();
    assert_eq!(
        got,
        [
            [via(first, 253, 1)],
            [via(first, 254, 1)],
            [via(second, 2, 1)],
            [via(second, 3, 1)]
        ]
    );
    assert_eq!(exhausted(&c), 11);
    // Free one in the first range: the walk wraps round to it.
    call(&env, "DEL", "c1", &c).expect_success();
    assert_eq!(add_on(&c, "c9"), [via(first, 254, 1)]);

    // Shorthand plus ranges: the shorthand set comes first; dual-stack gives one of each.
    let (s4, s6) = (v4(), v6());
    let c = conf(
        "mixed",
        json!({"subnet": s4.to_string(), "ranges": [[{"subnet": s6.to_string()}]]}),
    );
    assert_eq!(add_on(&c, "c1"), [via(s4, 2, 1), via(s6, 2, 1)]);
    let files = store_files_of(&env.data_dir(), "mixed");
    assert_eq!(files["last_reserved_ip.0"], at(s4, 2));
    assert_eq!(files["last_reserved_ip.1"], at(s6, 2));
}

#[test]
fn requested_ips() {
    require_root();
    let env = HostAndContainer::new().expect("world");
    let (n4, n6) = (v4(), v6());
    let base = conf(
        &env,
        "1.0.0",
        json!({"ranges": [[{"subnet": n4.to_string()}], [{"subnet": n6.to_string()}]]}),
    );
    let with = |key: &str, value: Value| {
        let mut c = base.clone();
        c[key] = value;
        c
    };
    let add_args = |id: &str, cni_args: &str, conf: &Value| {
        addresses(&run(&env, cni(&env, "ADD", id).args(cni_args), conf).expect_success())
    };

    // args.cni.ips, one per family.
    let c = with("args", json!({"cni": {"ips": [at(n4, 10), at(n6, 10)]}}));
    assert_eq!(add(&env, "c1", &c), [cidr(n4, 10), cidr(n6, 10)]);
    // runtimeConfig.ips (with a prefix, which is ignored); the v6 address is picked after
    // the hint the request left.
    let c = with(
        "runtimeConfig",
        json!({"ips": [format!("{}/24", at(n4, 11))]}),
    );
    assert_eq!(add(&env, "c2", &c), [cidr(n4, 11), cidr(n6, 11)]);
    // CNI_ARGS IP=, among other keys.
    assert_eq!(
        add_args("c3", &format!("IgnoreUnknown=1;IP={}", at(n4, 12)), &base),
        [cidr(n4, 12), cidr(n6, 12)]
    );
    // CNI_ARGS IP=a,b: dual-stack.
    assert_eq!(
        add_args("c4", &format!("IP={},{}", at(n6, 40), at(n4, 40)), &base),
        [cidr(n4, 40), cidr(n6, 40)]
    );
    // The same address from two sources is one request.
    let c = with("args", json!({"cni": {"ips": [at(n4, 41)]}}));
    assert_eq!(
        add_args("c5", &format!("IP={}", at(n4, 41)), &c),
        [cidr(n4, 41), cidr(n6, 41)]
    );
    let files = store_files(&env);
    assert_eq!(files[&at(n4, 40)], "c4\r\neth0");
    assert_eq!(files[&at(n6, 40)], "c4\r\neth0");

    // Two different addresses for one set, from two sources: refused, nothing reserved.
    let before = snapshot(&env.data_dir());
    let c = with("runtimeConfig", json!({"ips": [at(n4, 50)]}));
    let out = run(
        &env,
        cni(&env, "ADD", "c6").args(&format!("IP={}", at(n4, 51))),
        &c,
    );
    assert_eq!(error_code(&out), 7, "{out:?}");
    assert_eq!(snapshot(&env.data_dir()), before);

    for id in ["c1", "c2", "c3", "c4", "c5"] {
        call(&env, "DEL", id, &base).expect_success();
    }
    assert_only_lock(&env);
}

#[test]
fn runtime_ip_ranges_come_first() {
    require_root();
    let env = HostAndContainer::new().expect("world");
    let (configured, runtime, only) = (v4(), v4(), v4());
    let ip_ranges = |net: IpNetwork| json!({"ipRanges": [[{"subnet": net.to_string()}]]});

    // Configured ranges plus runtimeConfig.ipRanges: the runtime's set is prepended, as in
    // the reference (one address from each, the runtime's first).
    let mut c = conf(
        &env,
        "1.0.0",
        json!({"ranges": [[{"subnet": configured.to_string()}]]}),
    );
    c["runtimeConfig"] = ip_ranges(runtime);
    assert_eq!(add(&env, "c1", &c), [cidr(runtime, 2), cidr(configured, 2)]);
    // Set indices count the runtime's set: its hint is last_reserved_ip.0.
    assert_eq!(store_files(&env)["last_reserved_ip.0"], at(runtime, 2));
    call(&env, "DEL", "c1", &c).expect_success();
    assert_only_lock(&env);

    // No ranges in the config at all: the runtime supplies them (e.g. a node's pod CIDR).
    let mut c = conf_named(&env, "rt-only", "1.0.0", json!({}));
    c["runtimeConfig"] = ip_ranges(only);
    assert_eq!(add(&env, "c1", &c), [cidr(only, 2)]);
    // Without them the same config has no range.
    c.as_object_mut().expect("object").remove("runtimeConfig");
    assert_eq!(error_code(&call(&env, "ADD", "c2", &c)), 7);

    // A runtime range that overlaps a configured one is a config error.
    let mut c = conf(
        &env,
        "1.0.0",
        json!({"ranges": [[{"subnet": configured.to_string()}]]}),
    );
    c["runtimeConfig"] = ip_ranges(configured);
    assert_eq!(error_code(&call(&env, "ADD", "c3", &c)), 7);
}

#[test]
fn gc_releases_all_but_the_valid_attachments() {
    require_root();
    let env = HostAndContainer::new().expect("world");
    let net = v4();
    let conf = conf(&env, "1.1.0", json!({"subnet": net.to_string()}));
    for (id, ifname) in [
        ("c1", "eth0"),
        ("c1", "eth1"),
        ("c2", "eth0"),
        ("c3", "eth0"),
    ] {
        run(&env, cni_on(&env, "ADD", id, ifname), &conf).expect_success();
    }
    let holders = || -> BTreeSet<String> {
        store_files(&env)
            .into_iter()
            .filter(|(name, _)| name.parse::<IpAddr>().is_ok())
            .map(|(_, holder)| holder.replace("\r\n", "/"))
            .collect()
    };
    let gc = |key: &str, valid: Value| {
        let mut c = conf.clone();
        c[key] = valid;
        network_call(&env, "GC", &c)
    };
    let attachment = |id: &str, ifname: &str| json!({"containerID": id, "ifname": ifname});

    // GC is a 1.1.0 verb.
    let mut old = conf.clone();
    old["cniVersion"] = "1.0.0".into();
    old["cni.dev/valid-attachments"] = json!([]);
    assert_eq!(error_code(&network_call(&env, "GC", &old)), 1);
    assert_eq!(holders().len(), 4);

    let out = gc(
        "cni.dev/valid-attachments",
        json!([
            attachment("c1", "eth0"),
            attachment("c3", "eth0"),
            attachment("c9", "eth0")
        ]),
    );
    assert_eq!(out.expect_success(), Value::Null);
    assert_eq!(holders(), ["c1/eth0", "c3/eth0"].map(String::from).into());
    // The key of the 1.1.0 drafts that libcni still sends.
    gc("cni.dev/attachments", json!([attachment("c3", "eth0")])).expect_success();
    assert_eq!(holders(), ["c3/eth0".to_owned()].into());
    // The hint stays while anything is reserved, and goes with the last reservation.
    assert!(store_names(&env).contains("last_reserved_ip.0"));
    gc("cni.dev/valid-attachments", json!([])).expect_success();
    assert_only_lock(&env);
    // GC of a network that never had state creates none.
    let mut other = conf_named(
        &env,
        "never-used",
        "1.1.0",
        json!({"subnet": net.to_string()}),
    );
    // Without any attachments key GC is refused (7) rather than read as "release all".
    let refused = network_call(&env, "GC", &other);
    assert_eq!(refused.json().unwrap()["code"], 7, "{refused:?}");
    other["cni.dev/valid-attachments"] = json!([]);
    network_call(&env, "GC", &other).expect_success();
    assert!(!env.data_dir().join("never-used").exists());
}

#[test]
fn status_reports_exhaustion_and_unusable_store() {
    require_root();
    let env = HostAndContainer::new().expect("world");
    let net = v4();
    let conf = conf(
        &env,
        "1.1.0",
        json!({"subnet": net.to_string(), "rangeStart": at(net, 5), "rangeEnd": at(net, 5)}),
    );
    assert_eq!(
        network_call(&env, "STATUS", &conf).expect_success(),
        Value::Null
    );
    assert_eq!(add(&env, "c1", &conf), [cidr(net, 5)]);
    let out = network_call(&env, "STATUS", &conf);
    assert_eq!(error_code(&out), 50, "{out:?}");
    let msg = out.json().expect("json")["msg"].to_string();
    assert!(msg.contains("no free address"), "{msg}");
    call(&env, "DEL", "c1", &conf).expect_success();
    network_call(&env, "STATUS", &conf).expect_success();

    // A dataDir that is a regular file cannot hold state.
    let file = env.tmp.path().join("not-a-dir");
    fs::write(&file, "").expect("write file");
    let mut bad = conf.clone();
    bad["ipam"]["dataDir"] = file.to_str().expect("utf-8").into();
    let out = network_call(&env, "STATUS", &bad);
    assert_eq!(error_code(&out), 50, "{out:?}");

    // STATUS is a 1.1.0 verb; VERSION lists every version.
    let mut old = conf.clone();
    old["cniVersion"] = "1.0.0".into();
    assert_eq!(error_code(&network_call(&env, "STATUS", &old)), 1);
    let out = CniCall::new(BIN)
        .command("VERSION")
        .stdin("{\"cniVersion\":\"1.0.0\"}")
        .run_in(&env.host)
        .expect("run host-local")
        .expect_success();
    assert_eq!(out["supportedVersions"], json!(VERSIONS));
}

#[test]
fn bad_input_gets_the_right_code_and_writes_nothing() {
    require_root();
    let env = HostAndContainer::new().expect("world");
    let (full, roomy, elsewhere) = (v4(), v4(), v4());
    // "full": a two-address window, filled. "roomy": plenty of room, one reservation.
    let full_conf = conf_named(
        &env,
        "full",
        "1.0.0",
        json!({"subnet": full.to_string(), "rangeStart": at(full, 10), "rangeEnd": at(full, 11)}),
    );
    let good = conf(
        &env,
        "1.0.0",
        json!({"subnet": roomy.to_string(), "rangeStart": at(roomy, 2), "rangeEnd": at(roomy, 100)}),
    );
    let add_for = |id: &str| cni(&env, "ADD", id);
    let new_ctr = || add_for("new-ctr");
    add(&env, "full-1", &full_conf);
    add(&env, "full-2", &full_conf);
    assert_eq!(add(&env, "held", &good), [cidr(roomy, 2)]);

    // One field of `good` replaced, or a request on top of it.
    let with = |key: &str, value: Value| {
        let mut c = good.clone();
        c[key] = value;
        new_ctr().stdin_json(&c)
    };
    let with_ipam = |key: &str, value: Value| {
        let mut c = good.clone();
        c["ipam"][key] = value;
        new_ctr().stdin_json(&c)
    };
    let requesting = |ip: &str| new_ctr().args(&format!("IP={ip}")).stdin_json(&good);
    let mut no_ipam = good.clone();
    no_ipam.as_object_mut().expect("object").remove("ipam");
    let good_json = good.to_string();
    // A table: one case per line reads better than rustfmt's five.
    #[rustfmt::skip]
    let cases: Vec<(u64, &str, CniCall)> = vec![
        (6, "malformed JSON", new_ctr().stdin(&good_json[..20])),
        (6, "not an object", new_ctr().stdin("[1, 2]")),
        (1, "unknown cniVersion", with("cniVersion", "0.9.9".into())),
        (7, "bad network name", with("name", "../x".into())),
        (4, "missing CNI_COMMAND", new_ctr().env_remove("CNI_COMMAND").stdin(&*good_json)),
        (4, "unknown CNI_COMMAND", new_ctr().command("ADDD").stdin(&*good_json)),
        (4, "no CNI_CONTAINERID", new_ctr().env_remove("CNI_CONTAINERID").stdin(&*good_json)),
        (4, "missing CNI_IFNAME", new_ctr().env_remove("CNI_IFNAME").stdin(&*good_json)),
        (4, "16-byte ifname", new_ctr().ifname("a234567890123456").stdin(&*good_json)),
        (4, "ifname with /", new_ctr().ifname("a/b").stdin(&*good_json)),
        (4, "container id with ../", add_for("../etc").stdin(&*good_json)),
        (7, "missing ipam section", new_ctr().stdin_json(&no_ipam)),
        (6, "ipam key of the wrong type", with_ipam("subnet", 24.into())),
        (7, "bad subnet", with_ipam("subnet", "198.18.300.0/24".into())),
        (7, "subnet without prefix", with_ipam("subnet", at(roomy, 0).into())),
        (7, "rangeStart outside the subnet", with_ipam("rangeStart", at(elsewhere, 2).into())),
        (7, "gateway outside the subnet", with_ipam("gateway", at(elsewhere, 1).into())),
        (5, "resolvConf not there", with_ipam("resolvConf", "/nonexistent/resolv.conf".into())),
        (11, "range exhausted", new_ctr().stdin_json(&full_conf)),
        (11, "requested IP taken", requesting(&at(roomy, 2))),
        (7, "requested IP outside the range", requesting(&at(roomy, 200))),
        (7, "requested IP outside the subnet", requesting(&at(elsewhere, 9))),
        (7, "requested IP is not an IP", requesting("198.18.1")),
        (11, "second ADD of one attachment", add_for("held").stdin(&*good_json)),
    ];
    for (code, what, call) in cases {
        let before = snapshot(&env.data_dir());
        let out = call.run_in(&env.host).expect("run host-local");
        assert_eq!(error_code(&out), code, "{what}: {out:?}");
        assert_eq!(
            snapshot(&env.data_dir()),
            before,
            "{what}: the store changed"
        );
    }
}

/// 8 threads × 100 plugin processes, all ADD against one dataDir on a /22; then DEL all, again
/// concurrently. Every call is its own process: only the flock on the shared `lock` file
/// serialises the transactions.
#[test]
fn concurrent_processes_never_share_an_address() {
    require_root();
    const THREADS: usize = 8;
    const PER_THREAD: usize = 100;
    let env = HostAndContainer::new().expect("world");
    // Widen a fresh /24 to the /22 around it (still inside 198.18.0.0/15): 1021 addresses.
    let base = test_subnet_v4();
    let wide = Ipv4Network::new(base.network(), 22).expect("/22");
    let net = Ipv4Network::new(wide.network(), 22).expect("/22");
    let conf = conf(&env, "1.0.0", json!({"subnet": net.to_string()}));
    let id = |t: usize, i: usize| format!("t{t}-c{i}");

    let start = Instant::now();
    let all: Vec<IpAddr> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (env, conf) = (&env, &conf);
                s.spawn(move || {
                    (0..PER_THREAD)
                        .map(|i| {
                            let result = call(env, "ADD", &id(t, i), conf).expect_success();
                            let addr: IpNetwork = result["ips"][0]["address"]
                                .as_str()
                                .expect("address")
                                .parse()
                                .expect("CIDR");
                            addr.ip()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    let add_time = start.elapsed();
    assert_eq!(all.len(), THREADS * PER_THREAD);
    let unique: HashSet<IpAddr> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "an address was handed out twice");
    let in_net = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => net.contains(*v4) && *v4 != net.network() && *v4 != net.broadcast(),
        IpAddr::V6(_) => false,
    };
    assert!(all.iter().all(in_net), "{all:?}");
    // Every reservation names its own holder.
    let files = store_files(&env);
    for (t, i) in (0..THREADS).flat_map(|t| (0..PER_THREAD).map(move |i| (t, i))) {
        let ip = all[t * PER_THREAD + i];
        assert_eq!(files[&ip.to_string()], format!("{}\r\neth0", id(t, i)));
    }

    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (env, conf) = (&env, &conf);
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    call(env, "DEL", &id(t, i), conf).expect_success();
                }
            });
        }
    });
    let del_time = start.elapsed();
    assert_only_lock(&env);
    eprintln!(
        "{} concurrent ADD processes: {add_time:?}; {} DEL: {del_time:?}",
        THREADS * PER_THREAD,
        THREADS * PER_THREAD
    );
}

/// The reference plugin's binary (Debian `containernetworking-plugins`).
const REFERENCE: &str = "/usr/lib/cni/host-local";

/// The key index beside the network directory: what an ADD writes there, and lookups that
/// stay exact when the reference plugin (or anyone) reserves and releases behind it.
#[test]
fn key_index_and_the_reference_plugin_share_a_store() {
    require_root();
    use std::os::unix::fs::MetadataExt;
    assert!(
        Path::new(REFERENCE).exists(),
        "{REFERENCE} not found: install containernetworking-plugins"
    );
    let env = HostAndContainer::new().expect("world");
    let net = v4();
    let conf = conf(&env, "1.0.0", json!({"subnet": net.to_string()}));
    let reference = |command: &str, id: &str| {
        let call = CniCall::new(REFERENCE)
            .command(command)
            .container_id(id)
            .netns(env.ctr.path())
            .ifname("eth0")
            .path(&[Path::new("/usr/lib/cni")]);
        run(&env, call, &conf)
    };

    assert_eq!(add(&env, "ours-1", &conf), [cidr(net, 2)]);
    assert_eq!(add(&env, "ours-2", &conf), [cidr(net, 3)]);
    // The index: a pin (a hard link: the reservation's inode), the holder's address list,
    // the record. The network directory itself holds exactly the reference's layout.
    let idx = index_dir(&env);
    let pin = fs::metadata(idx.join(at(net, 2))).expect("pin");
    let file = fs::metadata(env.data_dir().join(NET).join(at(net, 2))).expect("reservation");
    assert_eq!((pin.ino(), file.nlink()), (file.ino(), 2));
    assert_eq!(
        fs::read_link(idx.join("@ours-1:eth0")).expect("holder list"),
        Path::new(&at(net, 2))
    );
    assert!(fs::symlink_metadata(idx.join(".summary")).is_ok());
    assert_eq!(
        store_names(&env),
        [
            at(net, 2),
            at(net, 3),
            "last_reserved_ip.0".into(),
            "lock".into()
        ]
        .into()
    );

    // The reference reserves behind our index, reads ours, and releases one of ours.
    let theirs = reference("ADD", "theirs-1").expect_success();
    assert_eq!(addresses(&theirs), [cidr(net, 4)]);
    reference("CHECK", "ours-1").expect_success();
    reference("DEL", "ours-2").expect_success();
    // Our CHECK and DEL see exactly what is on disk.
    call(&env, "CHECK", "theirs-1", &conf).expect_success();
    assert_eq!(error_code(&call(&env, "CHECK", "ours-2", &conf)), 999);
    call(&env, "DEL", "theirs-1", &conf).expect_success();
    assert!(!env.data_dir().join(NET).join(at(net, 4)).exists());
    // Round-robin continues after the reference's address; .3 (released by the reference)
    // is not handed straight back out.
    assert_eq!(add(&env, "ours-3", &conf), [cidr(net, 5)]);
    call(&env, "DEL", "ours-1", &conf).expect_success();
    reference("DEL", "ours-3").expect_success();
    // The reference left our index stale; our next call finds the network empty and
    // removes it.
    call(&env, "DEL", "nobody", &conf).expect_success();
    assert_only_lock(&env);
}

/// A main plugin (bridge) delegates to host-local through `berth_cni::delegate`, finding it
/// on CNI_PATH by the `ipam.type`.
#[test]
fn delegation_from_a_main_plugin() {
    require_root();
    let env = HostAndContainer::new().expect("world");
    let net = v4();
    let bin_dir = Path::new(BIN)
        .parent()
        .expect("binary has a directory")
        .to_owned();
    let conf = conf(&env, "1.0.0", json!({"subnet": net.to_string()}));
    let args = |command, conf: &Value| {
        let mut args = CmdArgs::new(
            command,
            ContainerId::try_from("deleg-1").expect("container id"),
            Some(env.ctr.path().to_owned()),
            IfName::try_from("eth0").expect("ifname"),
            vec![bin_dir.clone()],
        );
        args.stdin = serde_json::to_vec(conf).expect("serialize conf");
        args
    };
    // delegate_* run the child in the calling thread's netns: run them inside the host's.
    let in_host = |f: &(dyn Fn() -> Result<(), berth_cni::CniError> + Sync)| {
        env.host.run(f).expect("enter host netns")
    };

    let add = args(Command::Add, &conf);
    let result = env
        .host
        .run(|| delegate_add("host-local", &add))
        .expect("enter host netns")
        .expect("delegated ADD");
    assert_eq!(result.ips.len(), 1);
    assert_eq!(result.ips[0].address.to_string(), cidr(net, 2));
    assert_eq!(result.ips[0].gateway, Some(nth(net, 1)));
    assert_eq!(result.ips[0].interface, None);
    assert!(result.interfaces.is_empty() && result.routes.is_empty());
    assert_eq!(store_files(&env)[&at(net, 2)], "deleg-1\r\neth0");

    in_host(&|| delegate_check("host-local", &args(Command::Check, &conf))).expect("CHECK");
    in_host(&|| delegate_del("host-local", &args(Command::Del, &conf))).expect("DEL");
    assert_only_lock(&env);
    let err = in_host(&|| delegate_check("host-local", &args(Command::Check, &conf)))
        .expect_err("CHECK after DEL");
    assert_eq!(err.code, ErrorCode::Internal, "{err:?}");
    in_host(&|| delegate_del("host-local", &args(Command::Del, &conf))).expect("second DEL");

    // The plugin's error object comes back with its code.
    let mut bad = conf.clone();
    bad["ipam"]["subnet"] = "198.18.300.0/24".into();
    let err = env
        .host
        .run(|| delegate_add("host-local", &args(Command::Add, &bad)))
        .expect("enter host netns")
        .expect_err("bad subnet");
    assert_eq!(err.code, ErrorCode::InvalidConfig, "{err:?}");
    assert_only_lock(&env);
}
