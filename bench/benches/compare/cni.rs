//! Driving both plugin sets identically: the same conflists (only the plugin directory and the
//! point-to-point plugin's name differ: our `veth` is the reference `ptp` under our name), the
//! same invoker (`berth_cni::invoke::CniConfig`, libcni's order, capabilities and cache), the
//! same namespaces.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use berth_cni::invoke::{CniConfig, ExecEvent, RuntimeConf, error_chain};
use berth_cni::{CniResult, Command, ContainerId, IfName, NetConfList};
use netns_fixtures::TestNetns;
use serde_json::{Value, json};

/// Debian's containernetworking-plugins (1.1.1: CNI up to 1.0.0, hence 1.0.0 everywhere).
pub const REFERENCE_DIR: &str = "/usr/lib/cni";
pub const CNI_VERSION: &str = "1.0.0";

/// One set of plugin binaries.
#[derive(Debug, Clone)]
pub struct Impl {
    /// `ours` or `reference`.
    pub name: &'static str,
    pub dir: PathBuf,
    /// The point-to-point plugin: our `veth`, the reference `ptp`.
    pub p2p: &'static str,
    pub portmap: bool,
}

impl Impl {
    /// Ours from `target/release` (next to the bench executable's `deps/`).
    pub fn ours() -> Impl {
        let dir = netns_fixtures::bin("bridge")
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_owned);
        let portmap = dir.join("portmap").is_file();
        Impl {
            name: "ours",
            dir,
            p2p: "veth",
            portmap,
        }
    }

    pub fn reference() -> Result<Impl> {
        let dir = PathBuf::from(REFERENCE_DIR);
        for p in [
            "bridge",
            "host-local",
            "ptp",
            "loopback",
            "portmap",
            "tuning",
            "bandwidth",
            "static",
            "macvlan",
        ] {
            if !dir.join(p).is_file() {
                bail!(
                    "reference plugin {}/{p} missing: install containernetworking-plugins",
                    dir.display()
                );
            }
        }
        Ok(Impl {
            name: "reference",
            dir,
            p2p: "ptp",
            portmap: true,
        })
    }

    pub fn bin(&self, plugin: &str) -> PathBuf {
        self.dir.join(self.plugin_name(plugin))
    }

    /// Our plugin names map to the reference's (`veth` → `ptp`).
    pub fn plugin_name<'a>(&self, plugin: &'a str) -> &'a str {
        match plugin {
            "veth" | "ptp" => self.p2p,
            other => other,
        }
    }
}

fn ipam(subnet: &str, data_dir: &Path) -> Value {
    json!({
        "type": "host-local",
        "ranges": [[{"subnet": subnet}]],
        "dataDir": data_dir,
        "routes": [{"dst": "0.0.0.0/0"}],
    })
}

fn list(name: &str, plugins: Vec<Value>) -> Result<NetConfList> {
    let bytes = serde_json::to_vec(&json!({
        "cniVersion": CNI_VERSION,
        "name": name,
        "plugins": plugins,
    }))?;
    NetConfList::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("conflist {name}: {e}"))
}

/// `bridge` (gateway, masquerade: what podman's default network does) with `host-local`,
/// plus `portmap` when `portmap` is set.
pub fn bridge_list(
    bridge: &str,
    subnet: &str,
    data_dir: &Path,
    portmap: bool,
) -> Result<NetConfList> {
    let mut plugins = vec![json!({
        "type": "bridge",
        "bridge": bridge,
        "isGateway": true,
        "ipMasq": true,
        "ipam": ipam(subnet, data_dir),
    })];
    if portmap {
        plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}}));
    }
    list("benchbr", plugins)
}

/// The point-to-point plugin (`veth` / `ptp`) with `host-local` and masquerade.
pub fn p2p_list(imp: &Impl, subnet: &str, data_dir: &Path) -> Result<NetConfList> {
    list(
        "benchp2p",
        vec![json!({"type": imp.p2p, "ipMasq": true, "ipam": ipam(subnet, data_dir)})],
    )
}

/// `host-local` alone, as the only plugin of a list (it reads its `ipam` key).
pub fn host_local_list(subnet: &str, data_dir: &Path) -> Result<NetConfList> {
    list(
        "benchipam",
        vec![json!({"type": "host-local", "ipam": ipam(subnet, data_dir)})],
    )
}

/// `bridge` + `host-local` + `tuning` as podman's generated networks chain it, with what
/// people tune: a sysctl, the MTU and promiscuous mode.
pub fn tuning_list(bridge: &str, subnet: &str, data_dir: &Path) -> Result<NetConfList> {
    list(
        "benchtune",
        vec![
            json!({"type": "bridge", "bridge": bridge, "isGateway": true,
                   "ipam": ipam(subnet, data_dir)}),
            json!({"type": "tuning", "mtu": 1400, "promisc": true,
                   "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}}),
        ],
    )
}

/// The point-to-point plugin + `host-local` + `bandwidth` (ingress and egress shaped), as a
/// kubelet's bandwidth annotations make it.
pub fn bandwidth_list(imp: &Impl, subnet: &str, data_dir: &Path) -> Result<NetConfList> {
    list(
        "benchbw",
        vec![
            json!({"type": imp.p2p, "ipam": ipam(subnet, data_dir)}),
            json!({"type": "bandwidth", "ingressRate": 100_000_000, "ingressBurst": 1_000_000,
                   "egressRate": 100_000_000, "egressBurst": 1_000_000}),
        ],
    )
}

/// `static` alone, as the only plugin of a list (it reads its `ipam` key): no state at all.
pub fn static_list() -> Result<NetConfList> {
    list(
        "benchstatic",
        vec![json!({"type": "static", "ipam": {"type": "static",
            "addresses": [{"address": "198.18.250.10/24", "gateway": "198.18.250.1"}],
            "routes": [{"dst": "0.0.0.0/0"}]}})],
    )
}

/// `macvlan` in bridge mode on `master` with `host-local`.
pub fn macvlan_list(master: &str, subnet: &str, data_dir: &Path) -> Result<NetConfList> {
    list(
        "benchmacvlan",
        vec![
            json!({"type": "macvlan", "master": master, "mode": "bridge",
                    "ipam": ipam(subnet, data_dir)}),
        ],
    )
}

pub fn loopback_list() -> Result<NetConfList> {
    list("benchlo", vec![json!({"type": "loopback"})])
}

/// A container id unique in this process.
pub fn container_id() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "bench-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The runtime's view of one attachment: `eth0` in `netns`, with one port mapping if
/// `host_port` is set (injected only into plugins declaring `portMappings`).
pub fn runtime_conf(netns: &Path, host_port: Option<u16>) -> Result<RuntimeConf> {
    let mut rt = RuntimeConf::new(
        ContainerId::try_from(container_id().as_str())?,
        Some(netns.to_owned()),
        IfName::try_from("eth0")?,
    );
    if let Some(port) = host_port {
        rt.capability_args.insert(
            "portMappings".into(),
            json!([{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]),
        );
    }
    Ok(rt)
}

/// One plugin execution seen by the invoker's observer.
#[derive(Debug, Clone)]
pub struct Exec {
    pub plugin: String,
    pub verb: Command,
    pub ms: f64,
}

/// The invoker with a timing observer: whole-chain time from `add`/`del`, per-plugin times
/// from `take_execs`.
#[derive(Debug, Clone)]
pub struct Driver {
    cni: CniConfig,
    execs: Arc<Mutex<Vec<Exec>>>,
}

pub fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

impl Driver {
    pub fn new(imp: &Impl, cache_dir: &Path) -> Driver {
        let execs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&execs);
        let cni = CniConfig::new(vec![imp.dir.clone()], cache_dir).with_observer(Arc::new(
            move |e: &ExecEvent<'_>| {
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Exec {
                        plugin: e.plugin.to_owned(),
                        verb: e.verb,
                        ms: e.duration.as_secs_f64() * 1e3,
                    });
            },
        ));
        Driver { cni, execs }
    }

    /// The same invoker without the observer (for untimed fills from many threads).
    pub fn quiet(imp: &Impl, cache_dir: &Path) -> Driver {
        Driver {
            cni: CniConfig::new(vec![imp.dir.clone()], cache_dir),
            execs: Arc::default(),
        }
    }

    /// ADD through the list from inside `host` (the plugins inherit its namespace); the time
    /// covers the invoker call only.
    pub fn add(
        &self,
        host: &TestNetns,
        list: &NetConfList,
        rt: &RuntimeConf,
    ) -> Result<(f64, CniResult)> {
        let (ms, result) = host
            .run(|| {
                let start = Instant::now();
                let r = self.cni.add_network_list(list, rt);
                (ms_since(start), r)
            })
            .with_context(|| format!("enter {}", host.name()))?;
        let result =
            result.map_err(|e| anyhow::anyhow!("ADD {}: {}", rt.container_id, error_chain(&e)))?;
        Ok((ms, result))
    }

    pub fn del(&self, host: &TestNetns, list: &NetConfList, rt: &RuntimeConf) -> Result<f64> {
        let (ms, result) = host
            .run(|| {
                let start = Instant::now();
                let r = self.cni.del_network_list(list, rt);
                (ms_since(start), r)
            })
            .with_context(|| format!("enter {}", host.name()))?;
        result.map_err(|e| anyhow::anyhow!("DEL {}: {}", rt.container_id, error_chain(&e)))?;
        Ok(ms)
    }

    /// Plugin executions since the last call.
    pub fn take_execs(&self) -> Vec<Exec> {
        std::mem::take(&mut *self.execs.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The first IPv4 address of a result, as text.
pub fn first_ip(result: &CniResult) -> Option<String> {
    result.ips.first().map(|ip| ip.address.ip().to_string())
}
