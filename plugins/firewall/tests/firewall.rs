//! The firewall layer against the real iptables and nft, each test inside its own throwaway
//! namespaces, table-driven over both backends.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_firewall::{BackendKind, Firewall, FirewallError, IptablesVariant, Masquerade, Owner};
use ipnetwork::IpNetwork;
use netns_fixtures::{TestNetns, require_root, test_subnet_v4, test_subnet_v6};

const BACKENDS: [BackendKind; 2] = [BackendKind::Iptables, BackendKind::Nftables];
const BUILTIN: [&str; 4] = [":PREROUTING ", ":INPUT ", ":OUTPUT ", ":POSTROUTING "];

fn owner(network: &str, container_id: &str, ifname: &str) -> Owner {
    Owner {
        network: network.into(),
        container_id: container_id.into(),
        ifname: ifname.into(),
    }
}

/// Host number `host` in `net`, with `net`'s prefix: the shape of a CNI result address.
fn addr_in(net: IpNetwork, host: u8) -> IpNetwork {
    let ip = match net.network() {
        IpAddr::V4(ip) => Ipv4Addr::from(u32::from(ip) + u32::from(host)).into(),
        IpAddr::V6(ip) => Ipv6Addr::from(u128::from(ip) + u128::from(host)).into(),
    };
    IpNetwork::new(ip, net.prefix()).unwrap()
}

/// A namespace playing the host, and a firewall of one backend acting in it.
struct World {
    ns: TestNetns,
    fw: Firewall,
}

impl World {
    fn new(kind: BackendKind) -> World {
        require_root();
        let fw = Firewall::detect(Some(kind)).unwrap();
        assert_eq!(fw.kind(), kind);
        World {
            ns: TestNetns::new().unwrap(),
            fw,
        }
    }

    fn add(&self, m: &Masquerade) -> Result<(), FirewallError> {
        self.ns.run(|| self.fw.add_masquerade(m)).unwrap()
    }

    fn del(&self, o: &Owner) -> Result<(), FirewallError> {
        self.ns.run(|| self.fw.del_masquerade(o)).unwrap()
    }

    fn check(&self, m: &Masquerade) -> Result<(), FirewallError> {
        self.ns.run(|| self.fw.check_masquerade(m)).unwrap()
    }

    fn gc(&self, network: &str, keep: &[Owner]) -> Vec<Owner> {
        self.ns
            .run(|| self.fw.gc_masquerade(network, keep))
            .unwrap()
            .unwrap()
    }

    fn sh(&self, program: &str, args: &[&str]) -> String {
        let out = self.ns.output(Command::new(program).args(args)).unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Every rule of the namespace's nat tables and every non-built-in chain, prefixed by
    /// the tool (iptables) — or the whole nft ruleset (nftables).
    fn rules(&self) -> Vec<String> {
        match self.fw.kind() {
            BackendKind::Iptables => ["iptables-save", "ip6tables-save"]
                .into_iter()
                .flat_map(|tool| {
                    self.sh(tool, &["-t", "nat"])
                        .lines()
                        .filter(|l| {
                            l.starts_with("-A ")
                                || (l.starts_with(':') && !BUILTIN.iter().any(|b| l.starts_with(b)))
                        })
                        .map(|l| format!("{tool}: {l}"))
                        .collect::<Vec<_>>()
                })
                .collect(),
            BackendKind::Nftables => self
                .sh("nft", &["list", "ruleset"])
                .lines()
                .map(str::to_owned)
                .collect(),
        }
    }

    /// Asserts that nothing of ours is left: no BERTH chain, no jump, no comment; for nft at
    /// most an empty `berth` table.
    fn assert_clean(&self, context: &str) {
        let rules = self.rules();
        let leftovers: Vec<&String> = rules
            .iter()
            .filter(|l| l.contains("BERTH") || l.contains("\"berth ") || l.contains("saddr"))
            .collect();
        assert!(leftovers.is_empty(), "{context}: left over: {leftovers:#?}");
    }
}

/// The chain name in an iptables dump, for `owner`'s comment.
fn chain_of(rules: &[String], comment: &str) -> String {
    let line = rules
        .iter()
        .find(|l| l.contains(&format!("\"{comment}\"")) && l.contains("-A POSTROUTING"))
        .unwrap_or_else(|| panic!("no jump for {comment:?} in {rules:#?}"));
    let chain = line.rsplit(' ').next().unwrap().to_owned();
    assert!(
        chain.starts_with("BERTH-MASQ-") && chain.len() == 23,
        "{chain}"
    );
    assert!(
        chain[11..].chars().all(|c| c.is_ascii_hexdigit()),
        "{chain}"
    );
    chain
}

/// What `add` of `m` (one v4 and one v6 source) must leave in the namespace, exactly.
fn expected(kind: BackendKind, rules: &[String], m: &Masquerade) -> Vec<String> {
    let o = &m.owner;
    let comment = format!("berth {} {} {}", o.network, o.container_id, o.ifname);
    let [v4, v6] = [m.sources[0], m.sources[1]];
    let subnet = |n: IpNetwork| IpNetwork::new(n.network(), n.prefix()).unwrap();
    match kind {
        BackendKind::Iptables => {
            let chain = chain_of(rules, &comment);
            let c = format!("-m comment --comment \"{comment}\"");
            let fam = |tool: &str, src: IpNetwork, full: u8, mcast: &str| {
                vec![
                    format!("{tool}: :{chain} - [0:0]"),
                    format!(
                        "{tool}: -A POSTROUTING -s {}/{full} {c} -j {chain}",
                        src.ip()
                    ),
                    format!("{tool}: -A {chain} -d {} {c} -j ACCEPT", subnet(src)),
                    format!("{tool}: -A {chain} ! -d {mcast} {c} -j MASQUERADE"),
                ]
            };
            let mut lines = fam("iptables-save", v4, 32, "224.0.0.0/4");
            lines.extend(fam("ip6tables-save", v6, 128, "ff00::/8"));
            lines
        }
        BackendKind::Nftables => vec![
            "table inet berth {".into(),
            "\tchain postrouting {".into(),
            "\t\ttype nat hook postrouting priority srcnat; policy accept;".into(),
            format!(
                "\t\tip saddr {} ip daddr != {} ip daddr != 224.0.0.0/4 masquerade comment \"{comment}\"",
                v4.ip(),
                subnet(v4)
            ),
            format!(
                "\t\tip6 saddr {} ip6 daddr != {} ip6 daddr != ff00::/8 masquerade comment \"{comment}\"",
                v6.ip(),
                subnet(v6)
            ),
            "\t}".into(),
            "}".into(),
        ],
    }
}

fn dual_stack(o: Owner, host: u8) -> Masquerade {
    Masquerade {
        owner: o,
        sources: vec![
            addr_in(test_subnet_v4().into(), host),
            addr_in(test_subnet_v6().into(), host),
        ],
    }
}

#[test]
fn add_check_del_leave_exactly_our_rules() {
    for kind in BACKENDS {
        let w = World::new(kind);
        let m = dual_stack(owner("net-a", "ctr-1", "eth0"), 5);

        let err = w.check(&m).unwrap_err();
        assert!(err.is_missing(), "{kind:?}: {err}");

        w.add(&m).unwrap();
        let after_one = w.rules();
        assert_eq!(after_one, expected(kind, &after_one, &m), "{kind:?}");
        w.add(&m).unwrap();
        assert_eq!(
            w.rules(),
            after_one,
            "{kind:?}: second add changed the rules"
        );
        w.check(&m).unwrap();

        w.del(&m.owner).unwrap();
        w.assert_clean(&format!("{kind:?} after del"));
        w.del(&m.owner).unwrap();
        w.assert_clean(&format!("{kind:?} after second del"));

        let err = w.check(&m).unwrap_err();
        assert!(err.is_missing(), "{kind:?}: {err}");
        let msg = err.to_string();
        assert!(msg.contains("net-a/ctr-1/eth0"), "{msg}");
        assert!(msg.contains(&m.sources[0].ip().to_string()), "{msg}");
        assert!(msg.contains(&m.sources[1].ip().to_string()), "{msg}");
    }
}

#[test]
fn check_names_the_missing_rule_and_add_repairs_it() {
    for kind in BACKENDS {
        let w = World::new(kind);
        let m = dual_stack(owner("net-a", "ctr-1", "eth0"), 7);
        w.add(&m).unwrap();
        let good = w.rules();
        // Remove the IPv4 half behind Berth's back.
        match kind {
            BackendKind::Iptables => {
                w.sh("iptables", &["-w", "-t", "nat", "-F", "POSTROUTING"]);
            }
            BackendKind::Nftables => {
                let listing = w.sh(
                    "nft",
                    &["-a", "list", "chain", "inet", "berth", "postrouting"],
                );
                let line = listing.lines().find(|l| l.contains("ip saddr")).unwrap();
                let handle = line.rsplit(' ').next().unwrap();
                w.sh(
                    "nft",
                    &[
                        "delete",
                        "rule",
                        "inet",
                        "berth",
                        "postrouting",
                        "handle",
                        handle,
                    ],
                );
            }
        }
        let err = w.check(&m).unwrap_err();
        let msg = err.to_string();
        assert!(err.is_missing(), "{kind:?}: {msg}");
        assert!(
            msg.contains(&m.sources[0].ip().to_string()),
            "{kind:?}: {msg}"
        );
        assert!(
            !msg.contains(&m.sources[1].ip().to_string()),
            "{kind:?}: {msg}"
        );
        match kind {
            BackendKind::Iptables => assert!(msg.contains("-A POSTROUTING -s"), "{msg}"),
            BackendKind::Nftables => assert!(msg.contains("ip saddr"), "{msg}"),
        }

        w.add(&m).unwrap();
        w.check(&m).unwrap();
        let mut repaired = w.rules();
        let mut good = good;
        // nft lists the re-added rule after the untouched IPv6 one.
        repaired.sort();
        good.sort();
        assert_eq!(repaired, good, "{kind:?}");
    }
}

#[test]
fn add_replaces_the_owners_old_addresses() {
    for kind in BACKENDS {
        let w = World::new(kind);
        let net = test_subnet_v4().into();
        let o = owner("net-a", "ctr-1", "eth0");
        let old = Masquerade {
            owner: o.clone(),
            sources: vec![addr_in(net, 5)],
        };
        let new = Masquerade {
            owner: o.clone(),
            sources: vec![addr_in(net, 6), addr_in(net, 7)],
        };
        w.add(&old).unwrap();
        w.add(&new).unwrap();
        w.check(&new).unwrap();
        assert!(w.check(&old).unwrap_err().is_missing(), "{kind:?}");
        let rules = w.rules().join("\n");
        let old_ip = format!("{} ", old.sources[0].ip());
        let old_ip_prefixed = format!("{}/32", old.sources[0].ip());
        assert!(
            !rules.contains(&old_ip) && !rules.contains(&old_ip_prefixed),
            "{kind:?}: {rules}"
        );
        w.del(&o).unwrap();
        w.assert_clean(&format!("{kind:?}"));
    }
}

#[test]
fn owners_sharing_an_address_keep_their_own_rules() {
    // ADD of B can come before DEL of A for the same address; DEL of A must leave B's rules.
    for kind in BACKENDS {
        let w = World::new(kind);
        let src = addr_in(test_subnet_v4().into(), 9);
        let a = Masquerade {
            owner: owner("net-a", "ctr-a", "eth0"),
            sources: vec![src],
        };
        let b = Masquerade {
            owner: owner("net-a", "ctr-b", "eth0"),
            sources: vec![src],
        };
        w.add(&a).unwrap();
        w.add(&b).unwrap();
        w.del(&a.owner).unwrap();
        w.check(&b).unwrap();
        assert!(w.check(&a).unwrap_err().is_missing());
        w.del(&b.owner).unwrap();
        w.assert_clean(&format!("{kind:?}"));
    }
}

#[test]
fn gc_keeps_the_listed_owners_and_removes_the_rest() {
    for kind in BACKENDS {
        let w = World::new(kind);
        let (v4, v6) = (test_subnet_v4().into(), test_subnet_v6().into());
        let only_v4 = Masquerade {
            owner: owner("net-a", "ctr-1", "eth0"),
            sources: vec![addr_in(v4, 1)],
        };
        let only_v6 = Masquerade {
            owner: owner("net-a", "ctr-2", "eth0"),
            sources: vec![addr_in(v6, 2)],
        };
        let both = Masquerade {
            owner: owner("net-a", "ctr-3", "eth1"),
            sources: vec![addr_in(v4, 3), addr_in(v6, 3)],
        };
        let other_net = Masquerade {
            owner: owner("net-b", "ctr-2", "eth0"),
            sources: vec![addr_in(v4, 4), addr_in(v6, 4)],
        };
        for m in [&only_v4, &only_v6, &both, &other_net] {
            w.add(m).unwrap();
        }

        let keep = [only_v4.owner.clone(), owner("net-a", "gone", "eth0")];
        let mut removed = w.gc("net-a", &keep);
        removed.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        assert_eq!(
            removed,
            [only_v6.owner.clone(), both.owner.clone()],
            "{kind:?}"
        );
        w.check(&only_v4).unwrap();
        w.check(&other_net).unwrap();
        assert!(w.check(&only_v6).unwrap_err().is_missing());
        assert!(w.check(&both).unwrap_err().is_missing());
        assert!(w.gc("net-a", &keep).is_empty(), "{kind:?}: second gc");

        // Everything of net-a and net-b goes with empty keep lists.
        assert_eq!(w.gc("net-a", &[]), std::slice::from_ref(&only_v4.owner));
        assert_eq!(w.gc("net-b", &[]), std::slice::from_ref(&other_net.owner));
        w.assert_clean(&format!("{kind:?} after gc"));
    }
}

#[test]
fn concurrent_owners_do_not_disturb_each_other() {
    const THREADS: u8 = 6;
    const ROUNDS: usize = 4;
    for kind in BACKENDS {
        let w = World::new(kind);
        let (v4, v6) = (test_subnet_v4().into(), test_subnet_v6().into());
        std::thread::scope(|scope| {
            for n in 1..=THREADS {
                let w = &w;
                scope.spawn(move || {
                    let m = Masquerade {
                        owner: owner("net-a", &format!("ctr-{n}"), "eth0"),
                        sources: vec![addr_in(v4, n), addr_in(v6, n)],
                    };
                    for _ in 0..ROUNDS {
                        w.add(&m).unwrap();
                        w.check(&m).unwrap();
                        w.del(&m.owner).unwrap();
                    }
                    w.add(&m).unwrap();
                });
            }
        });
        let removed = w.gc("net-a", &[]);
        assert_eq!(removed.len(), usize::from(THREADS), "{kind:?}: {removed:?}");
        w.assert_clean(&format!("{kind:?}"));
    }
}

#[test]
fn invalid_owners_are_refused_before_touching_rules() {
    for kind in BACKENDS {
        let w = World::new(kind);
        let m = Masquerade {
            owner: owner("net a", "ctr-1", "eth0"),
            sources: vec!["198.18.0.5/24".parse().unwrap()],
        };
        let err = w.add(&m).unwrap_err();
        assert!(matches!(err, FirewallError::Input(_)), "{err}");
        assert!(err.to_string().contains("\"net a\""), "{err}");
        assert!(matches!(
            w.del(&owner("n", "c\"", "eth0")),
            Err(FirewallError::Input(_))
        ));
        let gc = w.ns.run(|| w.fw.gc_masquerade("", &[])).unwrap();
        assert!(matches!(gc, Err(FirewallError::Input(_))));
        let empty = Masquerade {
            owner: owner("n", "c", "eth0"),
            sources: vec![],
        };
        assert!(matches!(w.add(&empty), Err(FirewallError::Input(_))));
        w.assert_clean(&format!("{kind:?}"));
    }
}

#[test]
fn detect_follows_the_hosts_iptables() {
    require_root();
    let version = Command::new("iptables").arg("-V").output().unwrap();
    let version = String::from_utf8(version.stdout).unwrap();
    let variant = if version.contains("(nf_tables)") {
        IptablesVariant::NfTables
    } else {
        IptablesVariant::Legacy
    };
    eprintln!("host: {}", version.trim());

    let auto = Firewall::detect(None).unwrap();
    assert_eq!(auto.kind(), BackendKind::Iptables);
    assert_eq!(auto.iptables_variant(), Some(variant));
    let nft = Firewall::detect(Some(BackendKind::Nftables)).unwrap();
    assert_eq!(nft.kind(), BackendKind::Nftables);
    assert_eq!(nft.iptables_variant(), None);

    let ns = TestNetns::new().unwrap();
    for fw in [&auto, &nft] {
        ns.run(|| fw.status()).unwrap().unwrap();
    }
}

const CHILD_ENV: &str = "BERTH_TEST_CHILD";

/// The legacy variant, on a host whose `iptables -V` says `(legacy)`: a fake `iptables`
/// first in PATH says so. PATH is process-wide, so this test re-executes itself in a child
/// spawned inside a throwaway namespace (the child inherits it) with that PATH.
#[test]
fn legacy_variant_uses_the_legacy_binaries() {
    const NAME: &str = "legacy_variant_uses_the_legacy_binaries";
    let save = |tool: &str| {
        let out = Command::new(tool).args(["-t", "nat"]).output().unwrap();
        assert!(out.status.success(), "{tool}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    if std::env::var_os(CHILD_ENV).is_some() {
        let fw = Firewall::detect(None).unwrap();
        assert_eq!(fw.iptables_variant(), Some(IptablesVariant::Legacy));
        let m = dual_stack(owner("net-a", "ctr-1", "eth0"), 5);
        fw.add_masquerade(&m).unwrap();
        fw.add_masquerade(&m).unwrap();
        fw.check_masquerade(&m).unwrap();
        for tool in ["iptables-legacy-save", "ip6tables-legacy-save"] {
            let rules = save(tool);
            assert_eq!(
                rules.matches("-j BERTH-MASQ-").count(),
                1,
                "{tool}: {rules}"
            );
            assert_eq!(rules.matches("-j MASQUERADE").count(), 1, "{tool}: {rules}");
        }
        for tool in ["iptables-nft-save", "ip6tables-nft-save"] {
            assert!(!save(tool).contains("BERTH"), "{tool} has our rules");
        }
        fw.del_masquerade(&m.owner).unwrap();
        for tool in ["iptables-legacy-save", "ip6tables-legacy-save"] {
            assert!(!save(tool).contains("BERTH"), "{tool} after del");
        }
        return;
    }
    require_root();
    let ns = TestNetns::new().unwrap();
    let fake = tempfile::tempdir().unwrap();
    let script = fake.path().join("iptables");
    std::fs::write(&script, "#!/bin/sh\necho 'iptables v1.8.9 (legacy)'\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = ns
        .output(
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, "1")
                .env("PATH", path),
        )
        .unwrap();
    assert!(
        out.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
}

/// ctr ── c0 · h0 ── host (forwarding) ── h1 · i0 ── internet, where "internet" knows only
/// the host's outward address and has no route back to the container subnet: its replies
/// reach the container only when the host masquerades.
struct Topology {
    ctr: TestNetns,
    host: TestNetns,
    internet: TestNetns,
    ctr_addr: IpNetwork,
    target: IpAddr,
}

impl Topology {
    fn new() -> Topology {
        let (ctr, host, internet) = (
            TestNetns::with_tag("c").unwrap(),
            TestNetns::with_tag("h").unwrap(),
            TestNetns::with_tag("i").unwrap(),
        );
        let (inner, outer): (IpNetwork, IpNetwork) =
            (test_subnet_v4().into(), test_subnet_v4().into());
        let a = |net, host| addr_in(net, host).to_string();
        host.ip(&[
            "link",
            "add",
            "h0",
            "type",
            "veth",
            "peer",
            "name",
            "c0",
            "netns",
            ctr.name(),
        ])
        .unwrap();
        host.ip(&[
            "link",
            "add",
            "h1",
            "type",
            "veth",
            "peer",
            "name",
            "i0",
            "netns",
            internet.name(),
        ])
        .unwrap();
        for (ns, dev, addr) in [
            (&host, "h0", a(inner, 1)),
            (&ctr, "c0", a(inner, 2)),
            (&host, "h1", a(outer, 1)),
            (&internet, "i0", a(outer, 2)),
        ] {
            ns.ip(&["addr", "add", &addr, "dev", dev]).unwrap();
            ns.ip(&["link", "set", dev, "up"]).unwrap();
        }
        ctr.ip(&[
            "route",
            "add",
            "default",
            "via",
            &addr_in(inner, 1).ip().to_string(),
        ])
        .unwrap();
        host.run(|| berth_netlink::sysctl::write("net/ipv4/ip_forward", "1"))
            .unwrap()
            .unwrap();
        Topology {
            ctr,
            host,
            internet,
            ctr_addr: addr_in(inner, 2),
            target: addr_in(outer, 2).ip(),
        }
    }

    fn ping(&self) -> bool {
        let target = self.target.to_string();
        let out = self
            .ctr
            .output(Command::new("busybox").args(["ping", "-c", "1", "-W", "1", &target]))
            .unwrap();
        out.status.success()
    }

    /// Forgets NAT decisions of earlier pings (the host namespace's table only).
    fn flush_conntrack(&self) {
        let out = self
            .host
            .output(Command::new("conntrack").arg("-F"))
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

#[test]
fn masquerade_carries_real_traffic() {
    for kind in BACKENDS {
        require_root();
        let t = Topology::new();
        let fw = Firewall::detect(Some(kind)).unwrap();
        let m = Masquerade {
            owner: owner("net-a", "ctr-1", "eth0"),
            sources: vec![t.ctr_addr],
        };
        assert!(
            !t.ping(),
            "{kind:?}: reached {} without masquerade",
            t.target
        );
        t.host.run(|| fw.add_masquerade(&m)).unwrap().unwrap();
        assert!(t.ping(), "{kind:?}: no reply with masquerade");
        t.host.run(|| fw.del_masquerade(&m.owner)).unwrap().unwrap();
        t.flush_conntrack();
        assert!(!t.ping(), "{kind:?}: reached {} after del", t.target);
        // The internet namespace never had a route back.
        assert!(!t.internet.ip(&["route"]).unwrap().contains("default"));
    }
}

/// Median wall time of one add and one del per backend. Run with
/// `cargo test -p berth-firewall --test firewall -- --ignored --nocapture timings`.
#[test]
#[ignore = "benchmark"]
fn timings() {
    const RUNS: usize = 20;
    for kind in BACKENDS {
        let w = World::new(kind);
        let m = dual_stack(owner("net-a", "ctr-1", "eth0"), 5);
        let v4_only = Masquerade {
            owner: m.owner.clone(),
            sources: vec![m.sources[0]],
        };
        let median = |op: &dyn Fn()| {
            let mut times: Vec<Duration> = (0..RUNS)
                .map(|_| {
                    let start = Instant::now();
                    op();
                    start.elapsed()
                })
                .collect();
            times.sort();
            times[RUNS / 2]
        };
        let mut report = Vec::new();
        for (label, masq) in [("dual-stack", &m), ("IPv4 only", &v4_only)] {
            let (mut adds, mut dels) = (Vec::new(), Vec::new());
            for _ in 0..RUNS {
                let start = Instant::now();
                w.add(masq).unwrap();
                adds.push(start.elapsed());
                let start = Instant::now();
                w.del(&masq.owner).unwrap();
                dels.push(start.elapsed());
            }
            adds.sort();
            dels.sort();
            report.push(format!(
                "{label}: add {:?}, del {:?}",
                adds[RUNS / 2],
                dels[RUNS / 2]
            ));
        }
        w.add(&m).unwrap();
        let readd = median(&|| w.add(&m).unwrap());
        let check = median(&|| w.check(&m).unwrap());
        eprintln!(
            "{kind:?}: {}; repeated add {readd:?}; check {check:?}",
            report.join("; ")
        );
    }
}
