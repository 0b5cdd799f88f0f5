//! A conflist of our real plugins through the libcni-equivalent invoker: ADD, CHECK, DEL after
//! a "restart" (a fresh invoker reading the cache), and GC of stale attachments.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::path::{Path, PathBuf};

use berth_cni::invoke::{CniConfig, RuntimeConf};
use berth_cni::{Attachment, ContainerId, IfName, NetConfList};
use netns_fixtures::{HostAndContainer, bin, require_root, test_subnet_v4};
use serde_json::json;

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

fn plugin_dir() -> PathBuf {
    bin("loopback")
        .parent()
        .expect("binary has a parent dir")
        .to_owned()
}

fn conflist(version: &str, data_dir: &Path) -> NetConfList {
    let subnet = test_subnet_v4();
    let bytes = serde_json::to_vec(&json!({
        "cniVersion": version,
        "name": "e2e-net",
        "plugins": [
            {"type": "loopback"},
            {"type": "host-local", "ipam": {"type": "host-local", "subnet": subnet.to_string(),
             "dataDir": data_dir, "routes": [{"dst": "0.0.0.0/0"}]}}
        ]
    }))
    .unwrap();
    NetConfList::from_bytes(&bytes).unwrap()
}

fn rt(env: &HostAndContainer, id: &str) -> RuntimeConf {
    RuntimeConf::new(
        ContainerId::try_from(id).unwrap(),
        Some(env.ctr.path().to_owned()),
        IfName::try_from("eth0").unwrap(),
    )
}

fn reservations(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join("e2e-net"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn add_check_del_survive_a_restart_in_every_version() {
    require_root();
    for version in VERSIONS {
        let env = HostAndContainer::new().unwrap();
        let list = conflist(version, &env.data_dir());
        let rt = rt(&env, "ctr-a");
        let result = env
            .host
            .run(|| {
                CniConfig::new(vec![plugin_dir()], env.cache_dir()).add_network_list(&list, &rt)
            })
            .unwrap()
            .unwrap_or_else(|e| panic!("{version}: {}", berth_cni::invoke::error_chain(&e)));
        assert_eq!(result.ips.len(), 1, "{version}");
        let ip = result.ips[0].address.ip().to_string();
        assert_eq!(reservations(&env.data_dir()), [ip]);
        let lo_up = env.ctr.netlink().link_by_name("lo").unwrap().unwrap().up;
        assert!(lo_up);

        // A new invoker, as after a restart of the runtime, finds everything in the cache.
        let fresh = CniConfig::new(vec![plugin_dir()], env.cache_dir());
        let cached = fresh
            .cached_result(&list.name, &rt.container_id, &rt.ifname)
            .unwrap();
        assert_eq!(cached.as_ref(), Some(&result), "{version}");
        if version >= "0.4.0" {
            env.host
                .run(|| fresh.check_network_list(&list, &rt))
                .unwrap()
                .unwrap();
        }
        env.host
            .run(|| fresh.del_network_list(&list, &rt))
            .unwrap()
            .unwrap();
        assert!(reservations(&env.data_dir()).is_empty(), "{version}");
        assert!(fresh.cached_attachments(None).unwrap().is_empty());
        // DEL is idempotent through the whole chain.
        env.host
            .run(|| fresh.del_network_list(&list, &rt))
            .unwrap()
            .unwrap();
    }
}

/// Issue 11, finding 4: an invoker killed between writing a result and renaming it left the
/// temporary in the cache, and DEL did not remove it. Whoever next writes or removes an entry
/// in the cache directory now sweeps the temporaries of writers that are gone.
#[test]
fn del_sweeps_the_temporary_of_a_killed_writer() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let list = conflist("1.0.0", &env.data_dir());
    let rt = rt(&env, "ctr-k");
    let cni = CniConfig::new(vec![plugin_dir()], env.cache_dir());
    env.host
        .run(|| cni.add_network_list(&list, &rt))
        .unwrap()
        .unwrap();
    let results = env.cache_dir().join("results");
    // What a writer with a pid no process can have (above pid_max) leaves when killed.
    let stale = results.join(".e2e-net-ctr-k-eth0.99999999.tmp");
    std::fs::write(&stale, b"{\"half\":").unwrap();
    env.host
        .run(|| cni.del_network_list(&list, &rt))
        .unwrap()
        .unwrap();
    let left: Vec<_> = std::fs::read_dir(&results)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in the cache: {left:?}");
}

#[test]
fn gc_removes_stale_attachments_and_their_addresses() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let list = conflist("1.1.0", &env.data_dir());
    let cni = CniConfig::new(vec![plugin_dir()], env.cache_dir());
    let mut ips = Vec::new();
    for id in ["ctr-a", "ctr-b", "ctr-c"] {
        let r = env
            .host
            .run(|| cni.add_network_list(&list, &rt(&env, id)))
            .unwrap()
            .unwrap();
        ips.push(r.ips[0].address.ip().to_string());
    }
    // An address reserved behind the runtime's back (a crashed ADD that never reached the
    // cache) is collected by the plugin's own GC verb.
    let orphan = env
        .host
        .run(|| {
            let mut crashed = rt(&env, "ctr-crashed");
            crashed.ifname = IfName::try_from("eth9").unwrap();
            let r = cni.add_network_list(&list, &crashed).unwrap();
            std::fs::remove_file(env.cache_dir().join("results/e2e-net-ctr-crashed-eth9")).unwrap();
            r.ips[0].address.ip().to_string()
        })
        .unwrap();
    assert_eq!(reservations(&env.data_dir()).len(), 4);

    let valid = [Attachment {
        container_id: ContainerId::try_from("ctr-b").unwrap(),
        ifname: IfName::try_from("eth0").unwrap(),
    }];
    env.host
        .run(|| cni.gc_network_list(&list, &valid))
        .unwrap()
        .unwrap();
    assert_eq!(
        reservations(&env.data_dir()),
        [ips[1].clone()],
        "orphan {orphan} or stale left"
    );
    let left: Vec<String> = cni
        .cached_attachments(None)
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(left, ["e2e-net/ctr-b/eth0"]);
    env.host
        .run(|| cni.status_network_list(&list))
        .unwrap()
        .unwrap();
}

#[test]
fn a_failing_plugin_is_named_with_its_code() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let bytes = serde_json::to_vec(&json!({
        "cniVersion": "1.0.0", "name": "e2e-net",
        "plugins": [{"type": "host-local", "ipam": {"type": "host-local", "subnet": "198.18.0.0/33"}}]
    })).unwrap();
    let list = NetConfList::from_bytes(&bytes).unwrap();
    let cni = CniConfig::new(vec![plugin_dir()], env.cache_dir());
    let err = env
        .host
        .run(|| cni.add_network_list(&list, &rt(&env, "ctr-a")))
        .unwrap()
        .unwrap_err();
    let berth_cni::invoke::InvokeError::Plugin { plugin, source, .. } = &err else {
        panic!("unexpected {err}");
    };
    assert_eq!(plugin, "host-local");
    assert_eq!(source.code, berth_cni::ErrorCode::InvalidConfig, "{source}");
    assert!(cni.cached_attachments(None).unwrap().is_empty());
}
