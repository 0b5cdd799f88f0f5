//! Links, veth pairs and bridges against the real kernel, inside throwaway namespaces.

use berth_netlink::{BridgeSpec, BridgeVlan, Errno, LinkError, VethPair, VlanTarget};
use netns_fixtures::{HostAndContainer, TestNetns, require_root, unique_name};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn veth_pair_spans_two_namespaces() -> TestResult {
    require_root();
    let env = HostAndContainer::new()?;
    let (host, ctr) = (env.host.netlink(), env.ctr.netlink());
    let host_name = unique_name("v");
    let mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
    let peer_mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x03];

    let link = host.add_veth_pair(&VethPair {
        peer_netns: Some(env.ctr.netns()),
        mtu: Some(1400),
        mac: Some(mac),
        peer_mac: Some(peer_mac),
        ..VethPair::new(&host_name, "eth0")
    })?;
    assert_eq!(link.name, host_name);
    assert_eq!(link.kind.as_deref(), Some("veth"));
    assert_eq!(link.mtu, 1400);
    assert_eq!(link.mac, Some(mac));
    assert!(link.netns_id.is_some(), "peer lives in another netns");

    // The peer was created directly in the container namespace, never in the host one.
    assert_eq!(host.link_by_name("eth0")?, None);
    let peer = ctr.link_by_name("eth0")?.ok_or("peer eth0 missing")?;
    assert_eq!(Some(peer.index), link.link_index);
    assert_eq!(peer.link_index, Some(link.index));
    assert_eq!(peer.mtu, 1400);
    assert_eq!(peer.mac, Some(peer_mac));

    // iproute2 agrees.
    let shown = env.ctr.ip(&["-o", "link", "show", "eth0"])?;
    assert!(shown.contains("mtu 1400"), "{shown}");

    // Deleting one end deletes both.
    ctr.del_link(peer.index)?;
    assert_eq!(host.link_by_index(link.index)?, None);
    Ok(())
}

#[test]
fn link_settings_round_trip() -> TestResult {
    require_root();
    let ns = TestNetns::new()?;
    let nl = ns.netlink();
    let (a, b) = (unique_name("a"), unique_name("b"));
    let link = nl.add_veth_pair(&VethPair::new(&a, &b))?;
    assert!(!link.up);

    nl.set_mtu(link.index, 1280)?;
    nl.set_mac(link.index, [0x02, 0, 0, 0, 0, 0x42])?;
    nl.set_promisc(link.index, true)?;
    nl.set_up(link.index)?;
    let now = nl.link_by_index(link.index)?.ok_or("link vanished")?;
    assert_eq!(now.mtu, 1280);
    assert_eq!(now.mac, Some([0x02, 0, 0, 0, 0, 0x42]));
    assert!(now.up && now.promisc);

    // Renaming traditionally needs the link down (EBUSY); do it the portable way.
    nl.set_down(link.index)?;
    nl.set_promisc(link.index, false)?;
    nl.rename(link.index, "renamed0")?;
    let now = nl.link_by_name("renamed0")?.ok_or("renamed link missing")?;
    assert_eq!(now.index, link.index);
    assert!(!now.up && !now.promisc);
    assert_eq!(nl.link_by_name(&a)?, None);

    let names: Vec<String> = nl.links()?.into_iter().map(|l| l.name).collect();
    assert!(names.contains(&"lo".to_owned()) && names.contains(&"renamed0".to_owned()));
    assert!(names.contains(&b), "{names:?}");
    Ok(())
}

#[test]
fn set_netns_moves_a_link() -> TestResult {
    require_root();
    let env = HostAndContainer::new()?;
    let (a, b) = (unique_name("a"), unique_name("b"));
    let link = env.host.netlink().add_veth_pair(&VethPair::new(&a, &b))?;
    env.host.netlink().set_netns(link.index, env.ctr.netns())?;
    assert_eq!(env.host.netlink().link_by_name(&a)?, None);
    assert!(env.ctr.netlink().link_by_name(&a)?.is_some());
    Ok(())
}

#[test]
fn missing_and_duplicate_links_are_recognisable() -> TestResult {
    require_root();
    let ns = TestNetns::new()?;
    let nl = ns.netlink();

    // Lookups of missing links are None, not errors.
    assert_eq!(nl.link_by_name("nosuchlink")?, None);
    assert_eq!(nl.link_by_index(999_999)?, None);

    // ENODEV on delete: "already gone" for DEL.
    let err = nl.del_link(999_999).expect_err("no such link");
    assert_eq!(err.errno(), Some(libc::ENODEV));
    assert!(err.is_not_found(), "{err}");
    assert!(!nl.del_link_by_name_if_exists("nosuchlink")?);

    // EEXIST on create, with both names and the namespace in the message.
    let (a, b) = (unique_name("a"), unique_name("b"));
    nl.add_veth_pair(&VethPair::new(&a, &b))?;
    let err = nl
        .add_veth_pair(&VethPair::new(&a, &b))
        .expect_err("duplicate");
    assert!(err.is_exists(), "{err:?}");
    assert!(matches!(err, LinkError::CreateVeth { .. }));
    let msg = berth_netlink::error_chain(&err);
    assert!(msg.contains(&a) && msg.contains(&b), "{msg}");
    assert!(msg.contains(ns.path().to_str().ok_or("path")?), "{msg}");
    assert!(msg.ends_with("File exists (os error 17)"), "{msg}");

    assert!(nl.del_link_by_name_if_exists(&b)?);
    assert_eq!(
        nl.link_by_name(&a)?,
        None,
        "deleting one end removes the pair"
    );
    Ok(())
}

#[test]
fn bridge_with_ports() -> TestResult {
    require_root();
    let ns = TestNetns::new()?;
    let nl = ns.netlink();
    let br_name = unique_name("br");
    let br = nl.add_bridge(&BridgeSpec {
        mtu: Some(1450),
        mac: Some([0x02, 0xbe, 0x27, 0, 0, 1]),
        ..BridgeSpec::new(&br_name)
    })?;
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert_eq!(br.mac, Some([0x02, 0xbe, 0x27, 0, 0, 1]));

    // A concurrent creator loses the EXCL race with EEXIST and falls back to the lookup.
    let err = nl
        .add_bridge(&BridgeSpec::new(&br_name))
        .expect_err("exists");
    assert!(err.is_exists(), "{err:?}");
    assert_eq!(
        nl.ensure_bridge(&BridgeSpec::new(&br_name))?.index,
        br.index
    );

    // A veth of that name is not a bridge.
    let (a, b) = (unique_name("a"), unique_name("b"));
    let port = nl.add_veth_pair(&VethPair::new(&a, &b))?;
    let err = nl
        .ensure_bridge(&BridgeSpec::new(&a))
        .expect_err("veth is not a bridge");
    assert!(err.to_string().contains("veth device"), "{err}");

    nl.set_master(port.index, br.index)?;
    nl.set_bridge_port_hairpin(port.index, true)?;
    nl.set_bridge_port_isolated(port.index, true)?;
    let now = nl.link_by_index(port.index)?.ok_or("port vanished")?;
    assert_eq!(now.master, Some(br.index));
    let settings = now.bridge_port.ok_or("no bridge port info")?;
    assert!(settings.hairpin && settings.isolated);
    let shown = ns.ip(&["-d", "link", "show", &a])?;
    assert!(
        shown.contains("hairpin on") && shown.contains("isolated on"),
        "{shown}"
    );

    nl.set_bridge_port_hairpin(port.index, false)?;
    let now = nl.link_by_index(port.index)?.ok_or("port vanished")?;
    assert_eq!(now.bridge_port.map(|p| p.hairpin), Some(false));

    nl.set_nomaster(port.index)?;
    let now = nl.link_by_index(port.index)?.ok_or("port vanished")?;
    assert_eq!(now.master, None);
    assert_eq!(now.bridge_port, None);

    nl.del_link(br.index)?;
    assert_eq!(nl.link_by_name(&br_name)?, None);
    Ok(())
}

/// VLAN filtering needs CONFIG_BRIDGE_VLAN_FILTERING. Where the kernel lacks it, the failure
/// must be a clean EOPNOTSUPP naming the bridge (reported, not skipped silently).
#[test]
fn bridge_vlans_work_or_fail_cleanly() -> TestResult {
    require_root();
    let ns = TestNetns::new()?;
    let nl = ns.netlink();
    let br_name = unique_name("br");
    let spec = BridgeSpec {
        vlan_filtering: true,
        ..BridgeSpec::new(&br_name)
    };
    let br = match nl.add_bridge(&spec) {
        Ok(br) => br,
        Err(err) if err.errno() == Some(libc::EOPNOTSUPP) => {
            assert!(err.to_string().contains(&br_name), "{err}");
            eprintln!("kernel without bridge VLAN filtering: {err}: EOPNOTSUPP as expected");
            assert_eq!(nl.link_by_name(&br_name)?, None, "nothing left behind");
            return Ok(());
        }
        Err(err) => return Err(err.into()),
    };
    let (a, b) = (unique_name("a"), unique_name("b"));
    let port = nl.add_veth_pair(&VethPair::new(&a, &b))?;
    nl.set_master(port.index, br.index)?;
    let vlan = BridgeVlan {
        vid: 10,
        pvid: true,
        untagged: true,
    };
    nl.bridge_vlan_add(port.index, vlan, VlanTarget::Master)?;
    assert!(nl.bridge_vlans(port.index)?.contains(&vlan));
    nl.bridge_vlan_del(port.index, vlan, VlanTarget::Master)?;
    assert!(!nl.bridge_vlans(port.index)?.contains(&vlan));
    Ok(())
}

#[test]
fn handle_is_usable_from_many_threads() -> TestResult {
    require_root();
    let ns = TestNetns::new()?;
    let nl = ns.netlink();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| -> Result<(), LinkError> {
                    for _ in 0..10 {
                        let (a, b) = (unique_name("a"), unique_name("b"));
                        let link = nl.add_veth_pair(&VethPair::new(&a, &b))?;
                        assert_eq!(nl.link_by_name(&a)?.map(|l| l.index), Some(link.index));
                        nl.del_link(link.index)?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("worker panicked"))
    })?;
    assert_eq!(nl.links()?.len(), 1, "only lo is left");
    Ok(())
}

/// Dumps racing with link changes: the kernel may flag them NLM_F_DUMP_INTR, which the engine
/// retries; either way every dump must succeed and be self-consistent.
#[test]
fn dumps_survive_concurrent_changes() -> TestResult {
    require_root();
    let ns = TestNetns::new()?;
    let nl = ns.netlink();
    let writer = berth_netlink::Netlink::open_in(ns.netns())?;
    // Enough links that a dump spans several datagrams: only then can it be interrupted.
    for _ in 0..60 {
        let (a, b) = (unique_name("a"), unique_name("b"));
        nl.add_veth_pair(&VethPair::new(&a, &b))?;
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| -> TestResult {
        let churn = s.spawn(|| -> Result<(), LinkError> {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (a, b) = (unique_name("a"), unique_name("b"));
                let link = writer.add_veth_pair(&VethPair::new(&a, &b))?;
                writer.del_link(link.index)?;
            }
            Ok(())
        });
        let result = (|| -> TestResult {
            for _ in 0..300 {
                let links = nl.links()?;
                assert!(links.iter().any(|l| l.name == "lo"));
                nl.addrs(None)?;
                nl.routes(berth_netlink::IpFamily::V6, None)?;
            }
            Ok(())
        })();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churn.join().expect("churn thread panicked")?;
        result
    })?;
    // Informational: on 6.x kernels this is typically a few dozen.
    eprintln!(
        "dumps restarted after NLM_F_DUMP_INTR: {}",
        nl.interrupted_dumps()
    );
    Ok(())
}
