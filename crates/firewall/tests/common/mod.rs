//! Shared pieces of the firewall tests: a namespace with a firewall acting in it, listings
//! of what is ours in it, and small TCP/UDP servers and clients that live in namespaces.

#![allow(dead_code)] // Each test binary uses a different part.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;

use berth_firewall::{BackendKind, Firewall, Owner};
use ipnetwork::IpNetwork;
use netns_fixtures::{EchoServer, TestNetns, require_root};

pub const BACKENDS: [BackendKind; 2] = [BackendKind::Iptables, BackendKind::Nftables];

pub fn owner(network: &str, container_id: &str, ifname: &str) -> Owner {
    Owner {
        network: network.into(),
        container_id: container_id.into(),
        ifname: ifname.into(),
    }
}

/// Host number `host` in `net`, with `net`'s prefix: the shape of a CNI result address.
pub fn addr_in(net: IpNetwork, host: u8) -> IpNetwork {
    let ip = match net.network() {
        IpAddr::V4(ip) => Ipv4Addr::from(u32::from(ip) + u32::from(host)).into(),
        IpAddr::V6(ip) => Ipv6Addr::from(u128::from(ip) + u128::from(host)).into(),
    };
    IpNetwork::new(ip, net.prefix()).unwrap()
}

/// Runs `program args` in `ns`, asserting success; returns stdout.
pub fn sh(ns: &TestNetns, program: &str, args: &[&str]) -> String {
    let out = ns.output(Command::new(program).args(args)).unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} in {}: {}",
        ns.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Everything netfilter holds in `ns`, as the tools print it: both families' nat and
/// filter tables (iptables) and the whole nft ruleset. With iptables-nft the nft ruleset
/// shows the iptables tables too; both views are checked anyway.
pub fn ruleset(ns: &TestNetns) -> Vec<String> {
    let mut lines = Vec::new();
    for tool in ["iptables-save", "ip6tables-save"] {
        for line in sh(ns, tool, &[]).lines() {
            if !line.starts_with('#') {
                lines.push(format!("{tool}: {line}"));
            }
        }
    }
    for line in sh(ns, "nft", &["list", "ruleset"]).lines() {
        lines.push(format!("nft: {line}"));
    }
    lines
}

/// The lines of `ruleset` that belong to an attachment (not to the shared skeleton): owner
/// chains, owner comments, map elements leading to owner chains.
pub fn owner_lines(ruleset: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_owner_chain = false;
    for line in ruleset {
        let body = line.split_once(": ").map_or(line.as_str(), |(_, b)| b);
        let t = body.trim();
        if let Some(name) = t.strip_prefix("chain ") {
            in_owner_chain = [
                "mq-",
                "dn-",
                "iso-",
                "BERTH-MASQ-",
                "BERTH-DN-",
                "BERTH-ISO-",
            ]
            .iter()
            .any(|p| name.starts_with(p));
        } else if t == "}" {
            in_owner_chain = false;
        }
        let ours = in_owner_chain
            || t.contains("\"berth ")
            || t.contains("\"berth-isolation ")
            || t.contains(":BERTH-MASQ-")
            || t.contains(":BERTH-DN-")
            || t.contains(":BERTH-ISO-")
            || t.contains("-j BERTH-MASQ-")
            || t.contains("-j BERTH-DN-")
            || t.contains("-j BERTH-ISO-")
            || t.contains("jump mq-")
            || t.contains("jump dn-")
            || t.contains("jump iso-");
        if ours {
            out.push(line.clone());
        }
    }
    out
}

/// A namespace playing the host, and a firewall of one backend acting in it.
pub struct World {
    pub ns: TestNetns,
    pub fw: Firewall,
}

impl World {
    pub fn new(kind: BackendKind) -> World {
        require_root();
        let fw = Firewall::detect(Some(kind)).unwrap();
        assert_eq!(fw.kind(), kind);
        World {
            ns: TestNetns::with_tag("h").unwrap(),
            fw,
        }
    }

    /// Runs `f` with the firewall inside the namespace.
    pub fn on<T: Send>(&self, f: impl FnOnce(&Firewall) -> T + Send) -> T {
        self.ns.run(|| f(&self.fw)).unwrap()
    }

    pub fn ruleset(&self) -> Vec<String> {
        ruleset(&self.ns)
    }

    pub fn owner_lines(&self) -> Vec<String> {
        owner_lines(&self.ruleset())
    }

    /// Nothing of any attachment is left (the shared skeleton may stay, as the reference's
    /// top-level chains do).
    pub fn assert_clean(&self, context: &str) {
        let left = self.owner_lines();
        assert!(left.is_empty(), "{context}: left over: {left:#?}");
    }
}

/// A TCP+UDP server in `ns` answering `reply` (see [`EchoServer`]).
pub fn serve(ns: &TestNetns, addr: SocketAddr, reply: &str) -> EchoServer {
    EchoServer::start(ns, addr, reply).unwrap()
}
