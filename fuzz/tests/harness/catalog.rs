//! The plugins under test and the valid configurations mutations start from (taken from each
//! plugin's README and tests), for every CNI version.

use serde_json::{Value, json};

use super::world::{
    ATT_GATEWAY, BRIDGE, DEVICE, DEVICE_MAC, GATEWAY4, GATEWAY6, MASTER, NETWORK, Ns, SUBNET4,
    SUBNET6, World,
};

pub const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Plugin {
    Loopback,
    HostLocal,
    Static,
    Bridge,
    Veth,
    Macvlan,
    HostDevice,
    Portmap,
    Firewall,
    Tuning,
    Bandwidth,
}

pub const PLUGINS: [Plugin; 11] = [
    Plugin::Loopback,
    Plugin::HostLocal,
    Plugin::Static,
    Plugin::Bridge,
    Plugin::Veth,
    Plugin::Macvlan,
    Plugin::HostDevice,
    Plugin::Portmap,
    Plugin::Firewall,
    Plugin::Tuning,
    Plugin::Bandwidth,
];

impl Plugin {
    /// The binary (= the configuration's `type`).
    pub fn bin(self) -> &'static str {
        match self {
            Plugin::Loopback => "loopback",
            Plugin::HostLocal => "host-local",
            Plugin::Static => "static",
            Plugin::Bridge => "bridge",
            Plugin::Veth => "veth",
            Plugin::Macvlan => "macvlan",
            Plugin::HostDevice => "host-device",
            Plugin::Portmap => "portmap",
            Plugin::Firewall => "firewall",
            Plugin::Tuning => "tuning",
            Plugin::Bandwidth => "bandwidth",
        }
    }

    pub fn from_bin(name: &str) -> Option<Plugin> {
        PLUGINS.into_iter().find(|p| p.bin() == name)
    }

    /// Chained plugins act on the pre-wired container; the others get the empty one.
    pub fn netns(self) -> Ns {
        match self {
            Plugin::Portmap | Plugin::Firewall | Plugin::Tuning | Plugin::Bandwidth => Ns::Att,
            _ => Ns::Ctr,
        }
    }

    /// Whether a successful ADD may leave a bridge that DEL keeps on purpose.
    pub fn keeps_bridge(self) -> bool {
        self == Plugin::Bridge
    }

    /// The valid configurations of this plugin in `version` (each a starting point).
    pub fn configs(self, w: &World, version: &str) -> Vec<Value> {
        let data = w.data_dir();
        // Each plugin's records in a directory of its own, as their defaults are.
        let (tuning_dir, device_dir) = (data.join("tuning"), data.join("host-device"));
        let host_local = json!({"type": "host-local", "subnet": SUBNET4, "dataDir": data,
            "routes": [{"dst": "0.0.0.0/0"}]});
        let dual = json!({"type": "host-local", "dataDir": data,
            "ranges": [[{"subnet": SUBNET4, "rangeStart": "198.18.10.20",
                         "rangeEnd": "198.18.10.40", "gateway": GATEWAY4}],
                       [{"subnet": SUBNET6}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
            "resolvConf": w.hostile("resolv.conf")});
        let static_ipam = json!({"type": "static",
            "addresses": [{"address": "198.18.10.50/24", "gateway": GATEWAY4},
                          {"address": "fd42:b347:0:10::50/64", "gateway": GATEWAY6}],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "198.19.0.0/16", "gw": "198.18.10.254"}],
            "dns": {"nameservers": ["198.18.10.53"], "domain": "fuzz.test",
                    "search": ["fuzz.test"], "options": ["ndots:2"]}});
        let prev = w.att_prev_result(version);
        let mut confs = match self {
            Plugin::Loopback => vec![json!({})],
            Plugin::HostLocal => vec![
                json!({"ipam": host_local}),
                json!({"ipam": dual}),
                json!({"ipam": {"type": "host-local", "dataDir": data,
                    "ranges": [[{"subnet": "198.18.10.0/29"}]]}}),
            ],
            Plugin::Static => vec![json!({"ipam": static_ipam})],
            Plugin::Bridge => vec![
                json!({"bridge": BRIDGE, "ipam": host_local}),
                json!({"bridge": BRIDGE, "isGateway": true, "ipMasq": true,
                    "ipMasqBackend": "iptables", "ipam": host_local}),
                // isDefaultGateway adds the default routes itself: an IPAM default route
                // without a gateway beside it is refused (EEXIST), as by the reference.
                json!({"bridge": BRIDGE, "isDefaultGateway": true, "ipMasq": true,
                    "ipMasqBackend": "nftables", "mtu": 1400, "hairpinMode": true,
                    "ipam": without_routes(&dual)}),
                json!({"bridge": BRIDGE, "promiscMode": true, "portIsolation": true}),
                json!({"bridge": BRIDGE, "macspoofchk": true, "isGateway": true,
                    "ipam": static_ipam}),
            ],
            Plugin::Veth => vec![
                json!({"ipam": host_local}),
                json!({"ipMasq": true, "mtu": 1400, "ipam": dual}),
                json!({"addresses": ["198.18.10.1/30"],
                    "peer": {"netns": w.ns_path(Ns::Peer), "ifname": "eth1",
                             "addresses": ["198.18.10.2/30"]}}),
            ],
            Plugin::Macvlan => vec![
                json!({"master": MASTER, "mode": "bridge", "ipam": host_local}),
                json!({"master": MASTER, "mode": "private"}),
                json!({"master": MASTER, "mode": "vepa", "mtu": 1300,
                    "mac": "02:42:c6:12:00:30", "ipam": static_ipam}),
                json!({"master": MASTER, "mode": "passthru"}),
            ],
            Plugin::HostDevice => vec![
                json!({"device": DEVICE, "dataDir": device_dir}),
                json!({"hwaddr": DEVICE_MAC, "dataDir": device_dir, "ipam": static_ipam}),
            ],
            Plugin::Portmap => vec![
                json!({"backend": "iptables", "runtimeConfig": {"portMappings": [
                    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                    {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]},
                    "prevResult": prev}),
                json!({"backend": "nftables", "snat": true, "markMasqBit": 13,
                    "runtimeConfig": {"portMappings": [
                        {"hostPort": 9000, "containerPort": 9100, "protocol": "tcp",
                         "range": 3, "hostIP": ATT_GATEWAY}]},
                    "prevResult": prev}),
                json!({"backend": "iptables", "masqAll": true,
                    "conditionsV4": ["-s", "198.18.0.0/15"], "prevResult": prev,
                    "runtimeConfig": {"portMappings": [
                        {"hostPort": 8443, "containerPort": 443, "protocol": "sctp"}]}}),
            ],
            Plugin::Firewall => vec![
                json!({"backend": "iptables", "prevResult": prev}),
                json!({"backend": "nftables", "prevResult": prev}),
                json!({"backend": "iptables", "isolation": "strict", "prevResult": prev}),
            ],
            Plugin::Tuning => vec![
                json!({"sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1",
                                  "net.core.somaxconn": "500"},
                    "mac": "c2:b0:57:49:47:f1", "mtu": 1300, "promisc": true,
                    "allmulti": true, "txQLen": 2000, "dataDir": tuning_dir, "prevResult": prev}),
                json!({"dataDir": tuning_dir, "prevResult": prev}),
            ],
            Plugin::Bandwidth => vec![
                json!({"ingressRate": 20_000_000, "ingressBurst": 400_000,
                    "egressRate": 50_000_000, "egressBurst": 800_000, "prevResult": prev}),
                json!({"ingressRate": 8_000_000, "ingressBurst": 200_000,
                    "shapedSubnets": ["198.18.0.0/15", "fd42:b347::/48"], "prevResult": prev}),
                json!({"runtimeConfig": {"bandwidth": {"egressRate": 1_000_000,
                    "egressBurst": 100_000}}, "prevResult": prev}),
            ],
        };
        for conf in &mut confs {
            let obj = conf.as_object_mut().unwrap();
            let mut head = serde_json::Map::new();
            head.insert("cniVersion".into(), json!(version));
            head.insert("name".into(), json!(NETWORK));
            // An IPAM plugin gets its parent's configuration (type = the main plugin).
            let kind = match self {
                Plugin::HostLocal | Plugin::Static => "bridge",
                _ => self.bin(),
            };
            head.insert("type".into(), json!(kind));
            head.append(obj);
            *obj = head;
        }
        confs
    }
}

fn without_routes(ipam: &Value) -> Value {
    let mut ipam = ipam.clone();
    if let Some(o) = ipam.as_object_mut() {
        o.remove("routes");
    }
    ipam
}
