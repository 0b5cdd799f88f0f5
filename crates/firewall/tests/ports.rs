//! Port mappings against the real iptables and nft with real traffic, table-driven over both
//! backends. Each test builds its own world of namespaces:
//!
//! ```text
//!   client ── h1 ┐                    ┌ br0 ── ctr1 (server "ctr1", ports 80, 53, 9100-9102)
//!                ├─ host (forwarding) ┤     └─ ctr2
//!   far ──── h2 ┘                    (far: server "far" on 8080/5353, reached *through* host)
//! ```

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::net::{IpAddr, SocketAddr};

use berth_firewall::{
    BackendKind, DEFAULT_MARK_BIT, Desired, Firewall, MarkSpec, Masquerade, PortMap, PortMapping,
    Removal, RuleKind, conntrack, udp_ports,
};
use common::{BACKENDS, World, addr_in, owner, serve, sh};
use ipnetwork::IpNetwork;
use netns_fixtures::{
    EchoServer, TestNetns, require_root, tcp_get, test_subnet_v4, test_subnet_v6, udp_get, wire,
};

fn addr(ns: &TestNetns, dev: &str, a: IpNetwork) {
    ns.ip(&["addr", "add", &a.to_string(), "dev", dev, "nodad"])
        .unwrap();
}

fn sysctl(ns: &TestNetns, key: &str, value: &str) {
    ns.run(|| berth_netlink::sysctl::write(key, value))
        .unwrap()
        .unwrap();
}

struct Topology {
    w: World,
    client: TestNetns,
    far: TestNetns,
    ctr1: TestNetns,
    ctr2: TestNetns,
    /// The host's address facing the client (v4, v6).
    host_ip: IpAddr,
    host_ip6: IpAddr,
    far_ip: IpAddr,
    /// ctr1's address with the bridge subnet's prefix (v4, v6).
    ctr1_ip: IpNetwork,
    ctr1_ip6: IpNetwork,
    _servers: Vec<EchoServer>,
}

impl Topology {
    fn new(kind: BackendKind) -> Topology {
        let w = World::new(kind);
        let (client, far) = (
            TestNetns::with_tag("cl").unwrap(),
            TestNetns::with_tag("far").unwrap(),
        );
        let (ctr1, ctr2) = (
            TestNetns::with_tag("c1").unwrap(),
            TestNetns::with_tag("c2").unwrap(),
        );
        let host = &w.ns;
        // Addresses are usable at once: no duplicate address detection (link-local ones
        // would stay tentative for a second and neighbour discovery would stall).
        for ns in [host, &client, &far, &ctr1, &ctr2] {
            sysctl(ns, "net/ipv6/conf/all/accept_dad", "0");
            sysctl(ns, "net/ipv6/conf/default/accept_dad", "0");
        }
        let (cnet, fnet, bnet): (IpNetwork, IpNetwork, IpNetwork) = (
            test_subnet_v4().into(),
            test_subnet_v4().into(),
            test_subnet_v4().into(),
        );
        let (cnet6, bnet6): (IpNetwork, IpNetwork) =
            (test_subnet_v6().into(), test_subnet_v6().into());
        wire(host, "h1", &client, "eth0").unwrap();
        wire(host, "h2", &far, "eth0").unwrap();
        addr(host, "h1", addr_in(cnet, 1));
        addr(host, "h1", addr_in(cnet6, 1));
        addr(&client, "eth0", addr_in(cnet, 2));
        addr(&client, "eth0", addr_in(cnet6, 2));
        addr(host, "h2", addr_in(fnet, 1));
        addr(&far, "eth0", addr_in(fnet, 2));
        host.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
        host.ip(&["link", "set", "br0", "up"]).unwrap();
        addr(host, "br0", addr_in(bnet, 1));
        addr(host, "br0", addr_in(bnet6, 1));
        for (n, (ctr, hif)) in [(&ctr1, "v1"), (&ctr2, "v2")].into_iter().enumerate() {
            wire(host, hif, ctr, "eth0").unwrap();
            host.ip(&["link", "set", hif, "master", "br0"]).unwrap();
            let host_no = u8::try_from(n).unwrap() + 2;
            addr(ctr, "eth0", addr_in(bnet, host_no));
            addr(ctr, "eth0", addr_in(bnet6, host_no));
            ctr.ip(&[
                "route",
                "add",
                "default",
                "via",
                &addr_in(bnet, 1).ip().to_string(),
            ])
            .unwrap();
            ctr.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &addr_in(bnet6, 1).ip().to_string(),
            ])
            .unwrap();
        }
        client
            .ip(&[
                "route",
                "add",
                "default",
                "via",
                &addr_in(cnet, 1).ip().to_string(),
            ])
            .unwrap();
        client
            .ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &addr_in(cnet6, 1).ip().to_string(),
            ])
            .unwrap();
        far.ip(&[
            "route",
            "add",
            "default",
            "via",
            &addr_in(fnet, 1).ip().to_string(),
        ])
        .unwrap();
        sysctl(host, "net/ipv4/ip_forward", "1");
        sysctl(host, "net/ipv6/conf/all/forwarding", "1");
        // What the portmap plugin does for localhost access: 127/8 may leave via br0.
        sysctl(host, "net/ipv4/conf/br0/route_localnet", "1");
        let (ctr1_ip, ctr1_ip6) = (addr_in(bnet, 2), addr_in(bnet6, 2));
        let far_ip = addr_in(fnet, 2).ip();
        let mut servers = Vec::new();
        for port in [80u16, 53, 9100, 9101, 9102] {
            let reply = if (9100..=9102).contains(&port) {
                format!("ctr1:{port}")
            } else {
                "ctr1".to_owned()
            };
            servers.push(serve(&ctr1, SocketAddr::new(ctr1_ip.ip(), port), &reply));
            servers.push(serve(&ctr1, SocketAddr::new(ctr1_ip6.ip(), port), &reply));
        }
        for port in [8080u16, 5353] {
            servers.push(serve(&far, SocketAddr::new(far_ip, port), "far"));
        }
        Topology {
            w,
            client,
            far,
            ctr1,
            ctr2,
            host_ip: addr_in(cnet, 1).ip(),
            host_ip6: addr_in(cnet6, 1).ip(),
            far_ip,
            ctr1_ip,
            ctr1_ip6,
            _servers: servers,
        }
    }

    fn request(&self, mappings: Vec<PortMapping>) -> PortMap {
        PortMap {
            owner: owner("net-a", "ctr-1", "eth0"),
            mappings,
            container_ips: vec![self.ctr1_ip, self.ctr1_ip6],
            snat: true,
            masq_all: false,
            mark: MarkSpec::Bit(DEFAULT_MARK_BIT),
            conditions_v4: vec![],
            conditions_v6: vec![],
        }
    }

    fn add(&self, pm: &PortMap) {
        self.w
            .on(|fw| fw.apply(&Desired::PortMap((*pm).clone())))
            .unwrap();
    }

    fn del(&self, pm: &PortMap, with_request: bool) {
        self.w
            .on(|fw| {
                fw.remove(Removal::Ports {
                    owner: &pm.owner,
                    request: with_request.then_some(pm),
                })
            })
            .unwrap();
    }
}

fn mapping(protocol: &str, host: i64, container: i64) -> PortMapping {
    PortMapping {
        protocol: protocol.into(),
        host_port: host,
        container_port: container,
        range: None,
        host_port_end: None,
        host_ip: None,
    }
}

fn standard(t: &Topology) -> PortMap {
    let mut range = mapping("tcp", 9000, 9100);
    range.range = Some(3);
    t.request(vec![
        mapping("tcp", 8080, 80),
        mapping("udp", 5353, 53),
        range,
    ])
}

fn sa(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

#[test]
fn published_ports_reach_the_container_from_everywhere() {
    for kind in BACKENDS {
        let t = Topology::new(kind);
        let pm = standard(&t);
        let ctr1 = Some("ctr1".to_owned());
        assert_eq!(
            tcp_get(&t.client, sa(t.host_ip, 8080)),
            None,
            "{kind:?}: before"
        );
        t.add(&pm);
        t.w.on(|fw| fw.check(&Desired::PortMap(pm.clone())))
            .unwrap();

        // From another machine, IPv4 and IPv6, TCP and UDP.
        assert_eq!(
            tcp_get(&t.client, sa(t.host_ip, 8080)),
            ctr1,
            "{kind:?}: client tcp"
        );
        assert_eq!(
            tcp_get(&t.client, sa(t.host_ip6, 8080)),
            ctr1,
            "{kind:?}: client tcp6"
        );
        assert_eq!(
            udp_get(&t.client, sa(t.host_ip, 5353), None),
            ctr1,
            "{kind:?}: client udp"
        );
        assert_eq!(
            udp_get(&t.client, sa(t.host_ip6, 5353), None),
            ctr1,
            "{kind:?}: client udp6"
        );
        // A range maps one to one.
        for (host, ctr) in [(9000, "ctr1:9100"), (9002, "ctr1:9102")] {
            assert_eq!(
                tcp_get(&t.client, sa(t.host_ip, host)).as_deref(),
                Some(ctr),
                "{kind:?}: range {host}"
            );
        }
        // From the host itself: localhost and its own address.
        let localhost: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            tcp_get(&t.w.ns, sa(localhost, 8080)),
            ctr1,
            "{kind:?}: localhost"
        );
        assert_eq!(
            udp_get(&t.w.ns, sa(localhost, 5353), None),
            ctr1,
            "{kind:?}: localhost udp"
        );
        assert_eq!(
            tcp_get(&t.w.ns, sa(t.host_ip, 8080)),
            ctr1,
            "{kind:?}: host ip"
        );
        // Hairpin: a neighbour on the same bridge, and the container itself. Without
        // br_netfilter (bridge-nf-call-iptables 0) the DNAT'ed packet is routed back out
        // of br0 and SNAT alone makes the reply come back through the host. With it (1),
        // bridged packets are NATed on the bridge: a container reaching its *own* port needs
        // its bridge port in hairpin mode (bridge's `hairpinMode`), as with the reference.
        for (br_nf, hairpin) in [("0", "off"), ("1", "on")] {
            sysctl(&t.w.ns, "net/bridge/bridge-nf-call-iptables", br_nf);
            sysctl(&t.w.ns, "net/bridge/bridge-nf-call-ip6tables", br_nf);
            for port in ["v1", "v2"] {
                t.w.ns
                    .ip(&[
                        "link",
                        "set",
                        port,
                        "type",
                        "bridge_slave",
                        "hairpin",
                        hairpin,
                    ])
                    .unwrap();
            }
            sh(&t.w.ns, "conntrack", &["-F"]);
            for (who, ns) in [("ctr2", &t.ctr2), ("ctr1", &t.ctr1)] {
                let context = format!("{kind:?}: hairpin from {who}, bridge-nf-call {br_nf}");
                assert_eq!(tcp_get(ns, sa(t.host_ip, 8080)), ctr1, "{context}");
                assert_eq!(
                    udp_get(ns, sa(t.host_ip, 5353), None),
                    ctr1,
                    "udp {context}"
                );
                assert_eq!(tcp_get(ns, sa(t.host_ip6, 8080)), ctr1, "v6 {context}");
            }
        }
        // Traffic routed through the host to the same port elsewhere is not intercepted.
        let far = Some("far".to_owned());
        assert_eq!(
            tcp_get(&t.client, sa(t.far_ip, 8080)),
            far,
            "{kind:?}: transit"
        );
        assert_eq!(
            udp_get(&t.client, sa(t.far_ip, 5353), None),
            far,
            "{kind:?}: transit udp"
        );
        let _ = &t.far;

        t.del(&pm, true);
        assert_eq!(
            tcp_get(&t.client, sa(t.host_ip, 8080)),
            None,
            "{kind:?}: after del"
        );
        assert_eq!(
            tcp_get(&t.w.ns, sa(localhost, 8080)),
            None,
            "{kind:?}: localhost after del"
        );
        t.w.assert_clean(&format!("{kind:?} after del"));
        t.del(&pm, true);
        t.del(&pm, false);
        t.w.assert_clean(&format!("{kind:?} after repeated del"));
        assert!(
            t.w.on(|fw| fw.check(&Desired::PortMap(pm.clone())))
                .unwrap_err()
                .is_missing()
        );
    }
}

#[test]
fn del_without_the_request_finds_the_rules() {
    for kind in BACKENDS {
        let t = Topology::new(kind);
        let mut pm = standard(&t);
        pm.mappings[0].host_ip = Some(t.host_ip);
        t.add(&pm);
        t.add(&pm);
        assert_eq!(
            tcp_get(&t.client, sa(t.host_ip, 8080)).as_deref(),
            Some("ctr1"),
            "{kind:?}"
        );
        t.del(&pm, false);
        t.w.assert_clean(&format!("{kind:?}"));
        assert_eq!(tcp_get(&t.client, sa(t.host_ip, 8080)), None, "{kind:?}");
    }
}

#[test]
fn a_repeated_add_replaces_the_mappings() {
    for kind in BACKENDS {
        let t = Topology::new(kind);
        let first = t.request(vec![mapping("tcp", 8080, 80), mapping("tcp", 8081, 80)]);
        let second = t.request(vec![mapping("tcp", 8082, 80)]);
        t.add(&first);
        t.add(&second);
        t.w.on(|fw| fw.check(&Desired::PortMap(second.clone())))
            .unwrap();
        for (port, open) in [(8080, false), (8081, false), (8082, true)] {
            assert_eq!(
                tcp_get(&t.client, sa(t.host_ip, port)).is_some(),
                open,
                "{kind:?}: port {port}"
            );
        }
        // DEL with the stale first request still removes everything.
        t.del(&first, true);
        t.w.assert_clean(&format!("{kind:?}"));
    }
}

#[test]
fn stale_udp_conntrack_entries_are_removed() {
    for kind in BACKENDS {
        let t = Topology::new(kind);
        let pm = t.request(vec![mapping("udp", 5353, 53)]);
        // Another container's mapping: conntrack is active in the host, as on any host with
        // NAT rules (a namespace without any tracks nothing).
        let mut other = t.request(vec![mapping("tcp", 1, 1)]);
        other.owner = owner("net-a", "ctr-other", "eth0");
        t.add(&other);
        let from = Some(sa("0.0.0.0".parse().unwrap(), 40123));
        // Before the mapping: the host answers nothing, but conntrack remembers the flow.
        assert_eq!(udp_get(&t.client, sa(t.host_ip, 5353), from), None);
        t.add(&pm);
        // The same flow still follows its old (un-NATed) entry...
        assert_eq!(
            udp_get(&t.client, sa(t.host_ip, 5353), from),
            None,
            "{kind:?}"
        );
        // ...until the stale entries go, as portmap does after ADD.
        let ports = udp_ports(&pm).unwrap();
        let n =
            t.w.ns
                .run(|| conntrack::delete_udp_entries(&ports))
                .unwrap()
                .unwrap();
        assert!(n >= 1, "{kind:?}: deleted {n}");
        assert_eq!(
            udp_get(&t.client, sa(t.host_ip, 5353), from).as_deref(),
            Some("ctr1"),
            "{kind:?}"
        );
        t.del(&pm, true);
        t.del(&other, true);
    }
}

#[test]
fn del_of_one_owner_leaves_another_owners_port() {
    for kind in BACKENDS {
        let t = Topology::new(kind);
        let a = t.request(vec![mapping("tcp", 8080, 80)]);
        let mut b = a.clone();
        b.owner = owner("net-a", "ctr-b", "eth0");
        t.add(&a);
        t.add(&b);
        t.del(&a, true);
        t.w.on(|fw| fw.check(&Desired::PortMap(b.clone()))).unwrap();
        assert_eq!(
            tcp_get(&t.client, sa(t.host_ip, 8080)).as_deref(),
            Some("ctr1"),
            "{kind:?}"
        );
        t.del(&b, true);
        t.w.assert_clean(&format!("{kind:?}"));
    }
}

#[test]
fn gc_removes_exactly_the_owners_not_kept() {
    for kind in BACKENDS {
        let t = Topology::new(kind);
        let mut reqs = Vec::new();
        for (n, port) in [8080i64, 8081, 8082].into_iter().enumerate() {
            let mut pm = t.request(vec![mapping("tcp", port, 80)]);
            pm.owner = owner("net-a", &format!("ctr-{n}"), "eth0");
            t.add(&pm);
            reqs.push(pm);
        }
        let mut other = t.request(vec![mapping("tcp", 8090, 80)]);
        other.owner = owner("net-b", "ctr-0", "eth0");
        t.add(&other);
        let mut removed =
            t.w.on(|fw| {
                fw.gc(
                    RuleKind::Ports,
                    "net-a",
                    std::slice::from_ref(&reqs[1].owner),
                )
            })
            .unwrap();
        removed.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        assert_eq!(
            removed,
            [reqs[0].owner.clone(), reqs[2].owner.clone()],
            "{kind:?}"
        );
        for (pm, open) in [
            (&reqs[0], false),
            (&reqs[1], true),
            (&reqs[2], false),
            (&other, true),
        ] {
            let port = u16::try_from(pm.mappings[0].host_port).unwrap();
            assert_eq!(
                tcp_get(&t.client, sa(t.host_ip, port)).is_some(),
                open,
                "{kind:?}: {}",
                pm.owner.container_id
            );
        }
        t.w.on(|fw| fw.gc(RuleKind::Ports, "net-a", &[])).unwrap();
        t.w.on(|fw| fw.gc(RuleKind::Ports, "net-b", &[])).unwrap();
        t.w.assert_clean(&format!("{kind:?}"));
    }
}

/// A firewall reload (everything flushed) breaks published ports; reconcile puts every
/// rule back, and a second reconcile has nothing to do.
#[test]
fn reconcile_restores_everything_after_a_flush() {
    for kind in BACKENDS {
        let t = Topology::new(kind);
        let pm = standard(&t);
        let masq = Masquerade {
            owner: pm.owner.clone(),
            sources: vec![t.ctr1_ip],
        };
        t.add(&pm);
        t.w.on(|fw| fw.apply(&Desired::Masquerade(masq.clone())))
            .unwrap();
        // The backend's own view: iptables-nft's tables also appear in `nft list ruleset`,
        // with counters.
        let view = |lines: Vec<String>| -> Vec<String> {
            let mut v: Vec<String> = lines
                .into_iter()
                .filter(|l| kind == BackendKind::Nftables || !l.starts_with("nft: "))
                .collect();
            v.sort();
            v
        };
        let before = view(common::owner_lines(&t.w.ruleset()));
        match kind {
            BackendKind::Iptables => {
                for tool in ["iptables", "ip6tables"] {
                    for table in ["nat", "filter"] {
                        sh(&t.w.ns, tool, &["-w", "-t", table, "-F"]);
                        sh(&t.w.ns, tool, &["-w", "-t", table, "-X"]);
                    }
                }
            }
            BackendKind::Nftables => {
                sh(&t.w.ns, "nft", &["flush", "ruleset"]);
            }
        }
        assert_eq!(
            tcp_get(&t.client, sa(t.host_ip, 8080)),
            None,
            "{kind:?}: flushed"
        );
        let desired = [
            Desired::PortMap(pm.clone()),
            Desired::Masquerade(masq.clone()),
        ];
        let report = t.w.on(|fw| fw.reconcile(&desired)).unwrap();
        assert!(report.skeleton_repaired, "{kind:?}: {report:?}");
        assert!(!report.repaired.is_empty(), "{kind:?}: {report:?}");
        t.w.on(|fw| fw.check(&Desired::PortMap(pm.clone())))
            .unwrap();
        t.w.on(|fw| fw.check(&Desired::Masquerade(masq.clone())))
            .unwrap();
        assert_eq!(
            tcp_get(&t.client, sa(t.host_ip, 8080)).as_deref(),
            Some("ctr1"),
            "{kind:?}: after reconcile"
        );
        let after = view(common::owner_lines(&t.w.ruleset()));
        assert_eq!(after, before, "{kind:?}");
        let again = t.w.on(|fw| fw.reconcile(&desired)).unwrap();
        assert_eq!(again, Default::default(), "{kind:?}: second reconcile");
        t.del(&pm, true);
        t.w.on(|fw| fw.remove(Removal::Masquerade(&masq.owner)))
            .unwrap();
        t.w.assert_clean(&format!("{kind:?}"));
    }
}

/// nftables `conditionsV4`: a repeated ADD with the same request changes nothing, one
/// without conditions replaces the owner's chain, reconcile restores it after a flush, and
/// GC removes it with the owner.
#[test]
fn nft_conditions_through_replace_reconcile_and_gc() {
    let t = Topology::new(BackendKind::Nftables);
    let mut pm = t.request(vec![mapping("tcp", 8080, 80)]);
    pm.container_ips.truncate(1);
    // The client's subnet only: the far namespace is excluded.
    pm.conditions_v4 = vec![format!("ip saddr {}/24", t.host_ip)];
    t.add(&pm);
    let open = |ns: &TestNetns| tcp_get(ns, sa(t.host_ip, 8080)).is_some();
    assert!(open(&t.client) && !open(&t.far));
    t.w.on(|fw| fw.check(&Desired::PortMap(pm.clone())))
        .unwrap();
    let chain_lines = || {
        t.w.ruleset()
            .into_iter()
            .filter(|l| l.contains("hpc-"))
            .count()
    };
    let before = t.w.ruleset();
    t.add(&pm);
    assert_eq!(t.w.ruleset(), before, "a repeated ADD changed the ruleset");

    let mut plain = pm.clone();
    plain.conditions_v4.clear();
    t.add(&plain);
    assert_eq!(chain_lines(), 0, "{:#?}", t.w.ruleset());
    assert!(open(&t.far), "without conditions");
    t.add(&pm);
    assert!(!open(&t.far));

    sh(&t.w.ns, "nft", &["flush", "ruleset"]);
    assert!(!open(&t.client));
    let report =
        t.w.on(|fw| fw.reconcile(&[Desired::PortMap(pm.clone())]))
            .unwrap();
    assert!(report.skeleton_repaired, "{report:?}");
    assert!(open(&t.client) && !open(&t.far));
    let again =
        t.w.on(|fw| fw.reconcile(&[Desired::PortMap(pm.clone())]))
            .unwrap();
    assert_eq!(again, Default::default(), "second reconcile");

    let removed = t.w.on(|fw| fw.gc(RuleKind::Ports, "net-a", &[])).unwrap();
    assert_eq!(removed, [pm.owner.clone()]);
    assert_eq!(chain_lines(), 0, "{:#?}", t.w.ruleset());
    assert!(!open(&t.client));
    t.w.assert_clean("nftables conditions");
}

#[test]
fn bad_requests_apply_nothing() {
    require_root();
    for kind in BACKENDS {
        let w = World::new(kind);
        let base = PortMap {
            owner: owner("net-a", "ctr-1", "eth0"),
            mappings: vec![],
            container_ips: vec!["198.18.0.5/24".parse().unwrap()],
            snat: true,
            masq_all: false,
            mark: MarkSpec::Bit(13),
            conditions_v4: vec![],
            conditions_v6: vec![],
        };
        let mut reversed = mapping("tcp", 8010, 80);
        reversed.host_port_end = Some(8000);
        let mut v6_host = mapping("tcp", 80, 80);
        v6_host.host_ip = Some("2001:db8::1".parse().unwrap());
        for bad in [
            mapping("icmp", 80, 80),
            mapping("tcp", 0, 80),
            mapping("tcp", 80, 70000),
            reversed,
            v6_host,
        ] {
            let pm = PortMap {
                mappings: vec![mapping("tcp", 8080, 80), bad.clone()],
                ..base.clone()
            };
            let err = w
                .on(|fw| fw.apply(&Desired::PortMap(pm.clone())))
                .unwrap_err();
            assert!(err.is_input(), "{kind:?} {bad}: {err}");
            assert!(Firewall::validate(&Desired::PortMap(pm.clone())).is_err());
            w.assert_clean(&format!("{kind:?} {bad}"));
        }
    }
}

/// Costs of one ADD and DEL at 1 and at 1000 live attachments, per backend. Run with
/// `cargo test --release -p berth-firewall --test ports -- --ignored --nocapture flatness`.
#[test]
#[ignore = "benchmark"]
fn flatness() {
    use std::time::{Duration, Instant};
    const RUNS: usize = 15;
    for kind in BACKENDS {
        let w = World::new(kind);
        let request = |n: u32| {
            let ip: IpNetwork = format!("10.{}.{}.{}/8", n >> 16 & 255, n >> 8 & 255, n & 255 | 1)
                .parse()
                .unwrap();
            (
                PortMap {
                    owner: owner("net-a", &format!("ctr-{n}"), "eth0"),
                    mappings: vec![mapping("tcp", i64::from(20000 + n % 100_000), 80)],
                    container_ips: vec![ip],
                    snat: true,
                    masq_all: false,
                    mark: MarkSpec::Bit(13),
                    conditions_v4: vec![],
                    conditions_v6: vec![],
                },
                Masquerade {
                    owner: owner("net-a", &format!("ctr-{n}"), "eth0"),
                    sources: vec![ip],
                },
            )
        };
        // Per operation: (min, median) over the rounds; min is robust on a busy machine.
        type Stats = [(Duration, Duration); 4];
        let measure = |base: u32| -> Stats {
            let mut t: [Vec<Duration>; 4] = Default::default();
            for i in 0..RUNS {
                let (pm, m) = request(base + u32::try_from(i).unwrap());
                let time = |f: &dyn Fn()| {
                    let start = Instant::now();
                    f();
                    start.elapsed()
                };
                t[0].push(time(&|| {
                    w.on(|fw| fw.apply(&Desired::Masquerade(m.clone())))
                        .unwrap()
                }));
                t[1].push(time(&|| {
                    w.on(|fw| fw.apply(&Desired::PortMap(pm.clone()))).unwrap()
                }));
                t[2].push(time(&|| {
                    w.on(|fw| {
                        fw.remove(Removal::Ports {
                            owner: &pm.owner,
                            request: Some(&pm),
                        })
                    })
                    .unwrap()
                }));
                t[3].push(time(&|| {
                    w.on(|fw| fw.remove(Removal::Masquerade(&m.owner))).unwrap()
                }));
            }
            t.map(|mut v| {
                v.sort();
                (v[0], v[RUNS / 2])
            })
        };
        // Warm up the skeleton.
        let (pm, m) = request(25_000);
        w.on(|fw| fw.apply(&Desired::PortMap(pm.clone()))).unwrap();
        w.on(|fw| fw.apply(&Desired::Masquerade(m.clone())))
            .unwrap();
        let at_one = measure(30_000);
        for n in 0..1000 {
            let (pm, m) = request(n);
            w.on(|fw| fw.apply(&Desired::Masquerade(m.clone())))
                .unwrap();
            w.on(|fw| fw.apply(&Desired::PortMap(pm.clone()))).unwrap();
        }
        let at_1000 = measure(40_000);
        for (i, op) in ["add masquerade", "add ports", "del ports", "del masquerade"]
            .iter()
            .enumerate()
        {
            eprintln!(
                "{kind:?} {op}: min {:?} -> {:?}, median {:?} -> {:?} (1 -> 1000 live)",
                at_one[i].0, at_1000[i].0, at_one[i].1, at_1000[i].1
            );
        }
    }
}

#[test]
fn owners_with_different_mark_bits_coexist() {
    for kind in BACKENDS {
        let t = Topology::new(kind);
        let a = t.request(vec![mapping("tcp", 8080, 80)]);
        let mut b = t.request(vec![mapping("udp", 5353, 53)]);
        b.owner = owner("net-a", "ctr-b", "eth0");
        b.mark = MarkSpec::Bit(14);
        t.add(&a);
        t.add(&b);
        t.w.on(|fw| fw.check(&Desired::PortMap(a.clone()))).unwrap();
        t.w.on(|fw| fw.check(&Desired::PortMap(b.clone()))).unwrap();
        // Hairpin works for both: each mark is set and masqueraded.
        assert_eq!(
            tcp_get(&t.ctr2, sa(t.host_ip, 8080)).as_deref(),
            Some("ctr1"),
            "{kind:?}"
        );
        assert_eq!(
            udp_get(&t.ctr2, sa(t.host_ip, 5353), None).as_deref(),
            Some("ctr1"),
            "{kind:?}"
        );
        t.del(&a, true);
        t.del(&b, true);
        t.w.assert_clean(&format!("{kind:?}"));
    }
}
