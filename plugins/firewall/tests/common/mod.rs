//! Shared pieces of the firewall tests: a namespace with a firewall acting in it, listings
//! of what is ours in it, and small TCP/UDP servers and clients that live in namespaces.

#![allow(dead_code)] // Each test binary uses a different part.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use berth_firewall::{BackendKind, Firewall, Owner};
use ipnetwork::IpNetwork;
use netns_fixtures::{TestNetns, require_root};

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

/// A TCP and a UDP server in a namespace, answering every connection / datagram with
/// `reply`. Sockets are opened inside the namespace (and stay there); the serving threads
/// stop on drop.
pub struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    pub fn start(ns: &TestNetns, addr: SocketAddr, reply: &str) -> Server {
        let (tcp, udp) = ns
            .run(|| (TcpListener::bind(addr), UdpSocket::bind(addr)))
            .unwrap();
        let (tcp, udp) = (tcp.unwrap(), udp.unwrap());
        tcp.set_nonblocking(true).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let (s, r) = (stop.clone(), reply.to_owned());
        threads.push(std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.write_all(r.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }));
        let (s, r) = (stop.clone(), reply.to_owned());
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !s.load(Ordering::Relaxed) {
                if let Ok((_, from)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(r.as_bytes(), from);
                }
            }
        }));
        Server { stop, threads }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What a TCP connection from `ns` to `to` reads, or `None` if it cannot connect.
pub fn tcp_get(ns: &TestNetns, to: SocketAddr) -> Option<String> {
    ns.run(|| {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_millis(700)).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(700))).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    })
    .unwrap()
}

/// The answer to one UDP datagram from `ns` (bound to `from` if given) to `to`.
pub fn udp_get(ns: &TestNetns, to: SocketAddr, from: Option<SocketAddr>) -> Option<String> {
    ns.run(|| {
        let local: SocketAddr = from.unwrap_or_else(|| match to {
            SocketAddr::V4(_) => "0.0.0.0:0".parse().unwrap(),
            SocketAddr::V6(_) => "[::]:0".parse().unwrap(),
        });
        let s = UdpSocket::bind(local).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(700))).ok()?;
        s.send_to(b"hi", to).ok()?;
        let mut buf = [0u8; 64];
        let (n, _) = s.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .unwrap()
}
