//! The firewall layer against the real iptables and nft, each test inside its own throwaway
//! namespaces, table-driven over both backends.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_firewall::{
    BackendKind, Desired, Firewall, FirewallError, IptablesVariant, Masquerade, Owner, Removal,
    RuleKind,
};
use common::{BACKENDS, World, addr_in, owner, sh};
use ipnetwork::IpNetwork;
use netns_fixtures::{TestNetns, require_root, test_subnet_v4, test_subnet_v6};

trait Masq {
    fn add(&self, m: &Masquerade) -> Result<(), FirewallError>;
    fn del(&self, o: &Owner) -> Result<(), FirewallError>;
    fn check(&self, m: &Masquerade) -> Result<(), FirewallError>;
    fn gc(&self, network: &str, keep: &[Owner]) -> Vec<Owner>;
}

impl Masq for World {
    fn add(&self, m: &Masquerade) -> Result<(), FirewallError> {
        self.on(|fw| fw.apply(&Desired::Masquerade((*m).clone())))
    }

    fn del(&self, o: &Owner) -> Result<(), FirewallError> {
        self.on(|fw| fw.remove(Removal::Masquerade(o)))
    }

    fn check(&self, m: &Masquerade) -> Result<(), FirewallError> {
        self.on(|fw| fw.check(&Desired::Masquerade((*m).clone())))
    }

    fn gc(&self, network: &str, keep: &[Owner]) -> Vec<Owner> {
        self.on(|fw| fw.gc(RuleKind::Masquerade, network, keep))
            .unwrap()
    }
}

/// The owner chain's name in a listing, found through `comment`.
fn chain_of(lines: &[String], prefix: &str) -> String {
    let line = lines
        .iter()
        .find(|l| l.contains(prefix))
        .unwrap_or_else(|| panic!("no {prefix} chain in {lines:#?}"));
    let at = line.find(prefix).unwrap();
    let name: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    assert_eq!(name.len(), prefix.len() + 12, "{name}");
    assert!(
        name[prefix.len()..].chars().all(|c| c.is_ascii_hexdigit()),
        "{name}"
    );
    name
}

/// What `add` of `m` (one v4 and one v6 source) must leave of the owner, exactly (sorted).
fn expected(kind: BackendKind, lines: &[String], m: &Masquerade) -> Vec<String> {
    let o = &m.owner;
    let comment = format!("berth {} {} {}", o.network, o.container_id, o.ifname);
    let [v4, v6] = [m.sources[0], m.sources[1]];
    let subnet = |n: IpNetwork| IpNetwork::new(n.network(), n.prefix()).unwrap();
    let mut want = match kind {
        BackendKind::Iptables => {
            let chain = chain_of(lines, "BERTH-MASQ-");
            let bucket = lines
                .iter()
                .find(|l| l.contains(&format!("-j {chain}")))
                .and_then(|l| l.split(' ').nth(2))
                .unwrap()
                .to_owned();
            assert!(bucket.starts_with("BERTH-MQ-"), "{bucket}");
            let c = format!("-m comment --comment \"{comment}\"");
            let fam = |tool: &str, src: IpNetwork, full: u8, mcast: &str| {
                vec![
                    format!("{tool}: :{chain} - [0:0]"),
                    format!("{tool}: -A {bucket} -s {}/{full} {c} -j {chain}", src.ip()),
                    format!("{tool}: -A {chain} -d {} {c} -j ACCEPT", subnet(src)),
                    format!("{tool}: -A {chain} ! -d {mcast} {c} -j MASQUERADE"),
                ]
            };
            let mut lines = fam("iptables-save", v4, 32, "224.0.0.0/4");
            lines.extend(fam("ip6tables-save", v6, 128, "ff00::/8"));
            lines
        }
        BackendKind::Nftables => {
            // Elements only: per source a masq member, per (source, subnet) an exemption
            // (in the map of the subnet's prefix length),
            // and an index entry, all with the owner id as data.
            let joined = lines.join("\n");
            let marker = format!("{} comment \"{comment}\" : 0x", v4.ip());
            let at = joined
                .find(&marker)
                .unwrap_or_else(|| panic!("no masq4 element in {joined}"));
            let id = &joined[at + marker.len() - 2..at + marker.len() + 8];
            let c = format!("comment \"{comment}\"");
            let elements = [
                format!("{} {c} : {id}", v4.ip()),
                format!("{} . {} {c} : {id}", v4.ip(), subnet(v4).ip()),
                format!(
                    "{id} . 0x00000000 {c} : {} . {} . 0x{:08x}",
                    v4.ip(),
                    subnet(v4).ip(),
                    subnet(v4).prefix()
                ),
                format!("{} {c} : {id}", v6.ip()),
                format!("{} . {} {c} : {id}", v6.ip(), subnet(v6).ip()),
                format!(
                    "{id} . 0x00000001 {c} : {} . {} . 0x{:08x}",
                    v6.ip(),
                    subnet(v6).ip(),
                    subnet(v6).prefix()
                ),
            ];
            for e in &elements {
                assert!(joined.contains(e.as_str()), "missing {e} in {joined}");
            }
            assert_eq!(joined.matches(&c).count(), elements.len(), "{joined}");
            return lines.to_vec();
        }
    };
    want.sort();
    want
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
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
        let after_one = w.ruleset();
        // The backend's own view (iptables-nft tables also show up in `nft list ruleset`).
        let view = if kind == BackendKind::Iptables {
            "iptables"
        } else {
            "nft:"
        };
        let ours = sorted(
            common::owner_lines(&after_one)
                .into_iter()
                .filter(|l| l.starts_with(view) || l.starts_with("ip6tables") && view == "iptables")
                .collect(),
        );
        assert_eq!(ours, expected(kind, &ours, &m), "{kind:?}");
        w.add(&m).unwrap();
        assert_eq!(
            w.ruleset(),
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
        let good = sorted(w.owner_lines());
        let good_view: Vec<&String> = good.iter().filter(|l| !l.starts_with("nft: ")).collect();
        let _ = good_view;
        // Remove the IPv4 half of the dispatch behind Berth's back.
        match kind {
            BackendKind::Iptables => {
                let jump = good
                    .iter()
                    .find(|l| l.starts_with("iptables-save: -A BERTH-MQ-"))
                    .unwrap();
                let bucket = jump.split(' ').nth(2).unwrap();
                sh(&w.ns, "iptables", &["-w", "-t", "nat", "-F", bucket]);
            }
            BackendKind::Nftables => {
                let ip = m.sources[0].ip().to_string();
                sh(
                    &w.ns,
                    "nft",
                    &[
                        "delete",
                        "element",
                        "inet",
                        "berth",
                        "masq4",
                        &format!("{{ {ip} }}"),
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
            BackendKind::Iptables => assert!(msg.contains("-A BERTH-MQ-"), "{msg}"),
            BackendKind::Nftables => assert!(msg.contains("element masq4"), "{msg}"),
        }

        w.add(&m).unwrap();
        w.check(&m).unwrap();
        assert_eq!(sorted(w.owner_lines()), good, "{kind:?}");
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
        let rules = w.owner_lines().join("\n");
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
        // No rule can carry such an owner, so DEL has nothing to do (issue 11, finding 3: DEL
        // must accept what ADD accepted, and ADD with nothing to write never checks owners).
        w.del(&owner("n", "c\"", "eth0")).unwrap();
        let gc = w.ns.run(|| w.fw.gc(RuleKind::Masquerade, "", &[])).unwrap();
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
        fw.apply(&Desired::Masquerade(m.clone())).unwrap();
        fw.apply(&Desired::Masquerade(m.clone())).unwrap();
        fw.check(&Desired::Masquerade(m.clone())).unwrap();
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
        fw.remove(Removal::Masquerade(&m.owner)).unwrap();
        for tool in ["iptables-legacy-save", "ip6tables-legacy-save"] {
            let rules = save(tool);
            assert!(
                !rules.contains("BERTH-MASQ-") && !rules.contains("\"berth "),
                "{tool} after del: {rules}"
            );
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
        t.host
            .run(|| fw.apply(&Desired::Masquerade(m.clone())))
            .unwrap()
            .unwrap();
        assert!(t.ping(), "{kind:?}: no reply with masquerade");
        t.host
            .run(|| fw.remove(Removal::Masquerade(&m.owner)))
            .unwrap()
            .unwrap();
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
