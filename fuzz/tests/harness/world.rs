//! The world a fuzz case runs in: a namespace playing the host, three container namespaces
//! and a temporary directory, with everything the plugins need to find (a macvlan master, a
//! device for host-device, a container already wired to a bridge for the chained plugins) and
//! bystanders (another attachment's IPAM reservation, masquerade, port mappings and forward
//! rules on both firewall backends) whose damage would show.
//!
//! Every name and path in it has a fixed length and content (links live in private
//! namespaces, so they need not be unique), so a case's configuration text, and the bytes a
//! mutation hits, are the same on every run: a printed seed reproduces a case exactly.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use netns_fixtures::{TestNetns, bin, wire};
use serde_json::{Value, json};
use tempfile::TempDir;

use super::proc::{self, Exit, Kill, Sandbox, Spawn};
use super::snapshot::{Diff, Scope, Snapshot, settled_diff};

pub const NETWORK: &str = "fuzznet";
pub const CONTAINER_ID: &str = "fuzzctr";
pub const IFNAME: &str = "eth0";
pub const SUBNET4: &str = "198.18.10.0/24";
pub const GATEWAY4: &str = "198.18.10.1";
pub const SUBNET6: &str = "fd42:b347:0:10::/64";
pub const GATEWAY6: &str = "fd42:b347:0:10::1";
/// The bridge the bridge plugin's configurations name.
pub const BRIDGE: &str = "fz-cni0";
/// The macvlan master, a veth end whose peer stays in the host (for a carrier).
pub const MASTER: &str = "fz-master";
pub const MASTER_MTU: u32 = 1400;
/// The device host-device moves, a veth end with a fixed MAC.
pub const DEVICE: &str = "fz-dev";
pub const DEVICE_MAC: &str = "02:fe:00:00:00:01";
/// The pre-wired attachment of the chained plugins: `att`'s eth0, whose host end is
/// `ATT_HOST_END` on bridge `ATT_BRIDGE`.
pub const ATT_BRIDGE: &str = "fz-br";
pub const ATT_HOST_END: &str = "fz-hv";
pub const ATT_SUBNET: &str = "198.18.20.0/24";
pub const ATT_GATEWAY: &str = "198.18.20.1";
pub const ATT_IP: &str = "198.18.20.2";
/// Network of the bystander rules (its own subnets, so it never meets a case's routes).
pub const BYSTANDER_NETWORK: &str = "fuzzby";

/// Which namespace a case's CNI_NETNS names by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns {
    /// Empty container: main plugins create their interface here.
    Ctr,
    /// Container with eth0 already wired: chained plugins.
    Att,
    /// The far end of the veth plugin's container-to-container mode.
    Peer,
    /// The fake host itself.
    Host,
}

pub struct World {
    pub host: TestNetns,
    pub ctr: TestNetns,
    pub att: TestNetns,
    pub peer: TestNetns,
    pub bin_dir: PathBuf,
    pub sandbox: Sandbox,
    pub baseline: Snapshot,
    // Last: removed after the namespaces (and the plugins' records in it) are gone.
    tmp: TempDir,
}

/// Files of the world that are not plugin state.
const NOT_STATE: &[&str] = &[
    "ns",
    "net.d",
    "hostile/fifo",
    "hostile/regular",
    "hostile/resolv.conf",
    "hostile/evil",
];

/// IPAM plugins that misbehave on ADD (each a directory for CNI_PATH holding `host-local` and
/// `static`; every other verb succeeds quietly): what a main plugin must survive and undo.
pub const EVIL_IPAM: [(&str, &str); 5] = [
    ("garbage", "echo 'not a result'"),
    ("crash", "kill -SEGV $$"),
    (
        "error",
        "echo '{\"code\": 11, \"msg\": \"try again\"}'; exit 1",
    ),
    ("silent", "exit 1"),
    (
        "strange",
        "echo '{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"127.0.0.1/8\"},\
         {\"address\":\"198.18.10.0/24\"},{\"address\":\"fe80::1/64\",\"gateway\":\"::\"}],\
         \"routes\":[{\"dst\":\"0.0.0.0/0\",\"gw\":\"198.18.99.1\"},{\"dst\":\"::/0\"}]}'",
    ),
];

impl World {
    /// A fresh world with its bystanders.
    ///
    /// # Panics
    /// If any of it cannot be built: the harness cannot judge plugins without it.
    pub fn new() -> World {
        netns_fixtures::require_root();
        let tmp = tempfile::Builder::new()
            .prefix("berth-fuzz-")
            .tempdir()
            .unwrap();
        let root = tmp.path();
        for d in [
            "data",
            "cache",
            "root/var-lib",
            "root/run-cni",
            "ns",
            "hostile/dir",
            "net.d",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        let host = TestNetns::with_tag("h").unwrap();
        let ctr = TestNetns::with_tag("c").unwrap();
        let att = TestNetns::with_tag("a").unwrap();
        let peer = TestNetns::with_tag("p").unwrap();
        for (link, ns) in [("c", &ctr), ("a", &att), ("p", &peer), ("h", &host)] {
            symlink(ns.path(), root.join("ns").join(link)).unwrap();
        }
        let fifo = std::ffi::CString::new(root.join("hostile/fifo").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
        fs::write(root.join("hostile/regular"), b"not a namespace\n").unwrap();
        for (name, add) in EVIL_IPAM {
            let dir = root.join("hostile/evil").join(name);
            fs::create_dir_all(&dir).unwrap();
            let script = format!(
                "#!/bin/sh\ncase \"$CNI_COMMAND\" in\nADD) cat >/dev/null; {add} ;;\nesac\n"
            );
            for ipam in ["host-local", "static"] {
                fs::write(dir.join(ipam), &script).unwrap();
                fs::set_permissions(dir.join(ipam), fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        fs::write(
            root.join("hostile/resolv.conf"),
            b"nameserver 198.18.10.53\nsearch fuzz.test\noptions ndots:2\n",
        )
        .unwrap();

        for args in [
            &[
                "link", "add", MASTER, "type", "veth", "peer", "name", "fz-mpeer",
            ][..],
            &["link", "set", MASTER, "mtu", "1400", "up"],
            &["link", "set", "fz-mpeer", "mtu", "1400", "up"],
            &[
                "link", "add", DEVICE, "address", DEVICE_MAC, "type", "veth", "peer", "name",
                "fz-dpeer",
            ],
            &["link", "set", DEVICE, "up"],
            &["link", "set", "fz-dpeer", "up"],
            &["link", "add", ATT_BRIDGE, "type", "bridge"],
            &["addr", "add", "198.18.20.1/24", "dev", ATT_BRIDGE],
            &["link", "set", ATT_BRIDGE, "up"],
        ] {
            host.ip(args).unwrap();
        }
        // A host that runs containers forwards; the plugins that need it switch it on and
        // leave it on (host-wide, documented), and the kernel then adds router anycast
        // addresses to every link. Switched on first, that is the baseline, not a change.
        host.run(|| {
            for key in ["ipv4/ip_forward", "ipv6/conf/all/forwarding"] {
                fs::write(Path::new("/proc/sys/net").join(key), "1").unwrap();
            }
        })
        .unwrap();
        wire(&host, ATT_HOST_END, &att, IFNAME).unwrap();
        host.ip(&["link", "set", ATT_HOST_END, "master", ATT_BRIDGE])
            .unwrap();
        att.ip(&["addr", "add", "198.18.20.2/24", "dev", IFNAME])
            .unwrap();
        att.ip(&["route", "add", "default", "via", ATT_GATEWAY])
            .unwrap();

        let bin_dir = bin("loopback").parent().unwrap().to_path_buf();
        let sandbox = Sandbox::new(root);
        let mut world = World {
            host,
            ctr,
            att,
            peer,
            bin_dir,
            sandbox,
            baseline: Snapshot::default(),
            tmp,
        };
        world.add_bystanders();
        world.baseline = world.settled_snapshot();
        world
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root().join("data")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.root().join("cache")
    }

    pub fn netconf_dir(&self) -> PathBuf {
        self.root().join("net.d")
    }

    /// CNI_NETNS of `ns`: a symlink of fixed length in the world's directory.
    pub fn ns_path(&self, ns: Ns) -> PathBuf {
        let tag = match ns {
            Ns::Ctr => "c",
            Ns::Att => "a",
            Ns::Peer => "p",
            Ns::Host => "h",
        };
        self.root().join("ns").join(tag)
    }

    pub fn hostile(&self, name: &str) -> PathBuf {
        self.root().join("hostile").join(name)
    }

    pub fn containers(&self) -> Vec<&TestNetns> {
        vec![&self.ctr, &self.att, &self.peer]
    }

    pub fn scope(&self) -> Scope<'_> {
        Scope {
            host: &self.host,
            containers: self.containers(),
            dir: self.root(),
            skip: NOT_STATE,
        }
    }

    fn settled_snapshot(&self) -> Snapshot {
        let mut last = Snapshot::take(&self.scope());
        for _ in 0..10 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let now = Snapshot::take(&self.scope());
            if now == last {
                return now;
            }
            last = now;
        }
        last
    }

    /// What changed since the world was built, less what `accept` says is no finding.
    pub fn diff(&self, accept: &dyn Fn(&str, &str, bool) -> bool) -> Diff {
        settled_diff(&self.baseline, &self.scope(), accept)
    }

    /// A plugin call with the world's standard environment (CNI_PATH = the binaries).
    pub fn call(&self, plugin: &str, command: &str, id: &str, ns: Ns, ifname: &str) -> Spawn {
        Spawn::new(self.bin_dir.join(plugin), self.root())
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", self.ns_path(ns).to_str().unwrap())
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", self.bin_dir.to_str().unwrap())
    }

    pub fn run(&self, spec: &Spawn, kill: Kill) -> proc::Run {
        proc::run(&self.host, &self.sandbox, spec, kill)
    }

    /// Runs `spec` and panics unless it succeeds: for the world's own set-up.
    fn must(&self, spec: Spawn, conf: &Value) -> Value {
        let out = self.run(&spec.stdin(conf.to_string().into_bytes()), Kill::Never);
        assert!(
            out.exit == Exit::Code(0),
            "world set-up: {} failed: {:?}\n{}\n{}",
            conf,
            out.exit,
            out.stdout_text(),
            out.stderr_text()
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// Another attachment's state, which no case may touch: a reservation in the cases' IPAM
    /// network, masquerade rules, port mappings and forward-accept rules on both backends.
    fn add_bystanders(&self) {
        let data = self.data_dir();
        let ipam = json!({"cniVersion": "1.1.0", "name": NETWORK,
            "ipam": {"type": "host-local", "subnet": SUBNET4, "dataDir": data}});
        self.must(
            self.call("host-local", "ADD", "bystander", Ns::Att, "by0"),
            &ipam,
        );
        // The bystander's container address differs from the cases' (`ATT_IP`): rules are
        // keyed by it, and two attachments never share one.
        let mut prev = self.att_prev_result("1.1.0");
        prev["ips"][0]["address"] = json!("198.18.20.99/24");
        for (i, backend) in ["iptables", "nftables"].into_iter().enumerate() {
            let ifname = format!("by{}", i + 1);
            // One subnet each: two host-mode veths with one gateway would clash on its route.
            let subnet = format!("198.18.{}.0/24", 30 + i);
            let veth = json!({"cniVersion": "1.1.0", "name": BYSTANDER_NETWORK, "type": "veth",
                "ipMasq": true, "ipMasqBackend": backend,
                "ipam": {"type": "host-local", "subnet": subnet, "dataDir": data}});
            self.must(
                self.call("veth", "ADD", "bystander", Ns::Att, &ifname),
                &veth,
            );
            let id = format!("bystander-{backend}");
            let portmap = json!({"cniVersion": "1.1.0", "name": BYSTANDER_NETWORK,
                "type": "portmap", "backend": backend,
                "runtimeConfig": {"portMappings": [
                    {"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]},
                "prevResult": prev});
            self.must(self.call("portmap", "ADD", &id, Ns::Att, IFNAME), &portmap);
            let firewall = json!({"cniVersion": "1.1.0", "name": BYSTANDER_NETWORK,
                "type": "firewall", "backend": backend, "prevResult": prev});
            self.must(
                self.call("firewall", "ADD", &id, Ns::Att, IFNAME),
                &firewall,
            );
        }
    }

    /// The result of the main plugin that wired `att`, in `version`.
    pub fn att_prev_result(&self, version: &str) -> Value {
        let mut ip = json!({"address": format!("{ATT_IP}/24"), "gateway": ATT_GATEWAY,
            "interface": 2});
        if version.starts_with("0.") {
            ip["version"] = json!("4");
        }
        json!({"cniVersion": version,
            "interfaces": [{"name": ATT_BRIDGE}, {"name": ATT_HOST_END},
                           {"name": IFNAME, "sandbox": self.ns_path(Ns::Att)}],
            "ips": [ip],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}})
    }

    /// Removes bridges that a bridge ADD created and its DEL keeps on purpose (see the bridge
    /// plugin's README), so the next case starts from the same world.
    pub fn remove_created_bridges(&self) {
        let text = self
            .host
            .ip(&["-o", "link", "show", "type", "bridge"])
            .unwrap();
        for line in text.lines() {
            let Some(name) = line.split(": ").nth(1) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or(name);
            if name != ATT_BRIDGE {
                let _ = self.host.ip(&["link", "del", name]);
            }
        }
    }
}
